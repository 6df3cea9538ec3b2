//! `--cache-to` and `--cache-from` values, in buildx's syntax, checked when parsed: a
//! type or attribute kiln does not implement is an error that says so, never ignored.

use std::path::PathBuf;

use crate::request::{RequestError, bad, csv_pairs};

/// The tag a cache has in its layout's `index.json` when `tag=` is not given.
pub const DEFAULT_TAG: &str = "latest";

/// What a cache export holds (`mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps whose layers are the exported image's (buildx's default).
    #[default]
    Min,
    /// Every step of every stage that ran or was cached.
    Max,
}

/// Where a cache is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// An OCI image layout directory; the cache's manifest is tagged `tag` in its
    /// `index.json` (`org.opencontainers.image.ref.name`).
    Local {
        /// The layout directory.
        dir: PathBuf,
        /// The tag.
        tag: String,
    },
    /// A manifest in a registry (`type=registry,ref=HOST/REPO:TAG`). The solver never
    /// talks to a registry: the engine pushes and pulls, the solver gives and takes the
    /// record and the blobs in the store.
    Registry {
        /// The reference as given; the engine parses it (docker's normalisation).
        reference: String,
        /// `registry.insecure=true`: plain HTTP is allowed for its host, as for an
        /// insecure-listed registry (loopback hosts are allowed it anyway).
        insecure: bool,
    },
    /// In the built image's own config (`type=inline`): the record of the image's steps,
    /// whose layers are the image's; `--cache-from IMAGE` reads it back.
    Inline,
}

impl CacheLocation {
    /// How messages and progress name it: the directory, with `:TAG` when not `latest`;
    /// a registry cache by its reference.
    pub fn display(&self) -> String {
        match self {
            CacheLocation::Local { dir, tag } if tag == DEFAULT_TAG => dir.display().to_string(),
            CacheLocation::Local { dir, tag } => format!("{}:{tag}", dir.display()),
            CacheLocation::Registry { reference, .. } => reference.clone(),
            CacheLocation::Inline => "inline".to_owned(),
        }
    }
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExportSpec {
    /// Where it goes.
    pub location: CacheLocation,
    /// Which steps it holds.
    pub mode: CacheMode,
    /// `ignore-error=true`: a failed export is a warning instead of the build's error.
    pub ignore_error: bool,
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImportSpec {
    /// Where it is read from.
    pub location: CacheLocation,
    /// `ignore-error=true` (registry only): an unreachable registry is a warning, and the
    /// build runs without the cache, instead of an error before anything runs.
    pub ignore_error: bool,
}

/// buildx's cache types kiln knows of but does not implement yet.
const LATER_TYPES: &[&str] = &["gha", "s3", "azblob"];

/// buildx's attributes kiln knows of but does not implement yet.
const LATER_ATTRS: &[&str] = &[
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "image-manifest",
    "cache-mounts",
    "digest",
];

/// The cache types kiln implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Local,
    Registry,
    Inline,
}

/// The type and the other attributes. A value without `=` is buildx's shorthand for
/// `type=registry,ref=VALUE`.
fn kind_of(flag: &'static str, value: &str) -> Result<(Kind, Vec<(String, String)>), RequestError> {
    if !value.contains('=') {
        return Ok((Kind::Registry, vec![("ref".to_owned(), value.to_owned())]));
    }
    let mut attrs = csv_pairs(flag, value)?;
    let kind = attrs.remove("type").ok_or_else(|| {
        bad(
            flag,
            value,
            "missing type=...; kiln supports type=local (e.g. type=local,dest=DIR) and type=registry,ref=HOST/REPO:TAG",
        )
    })?;
    let kind = match kind.as_str() {
        "local" => Kind::Local,
        "registry" => Kind::Registry,
        "inline" => Kind::Inline,
        _ if LATER_TYPES.contains(&kind.as_str()) => {
            return Err(bad(
                flag,
                value,
                format!(
                    "type={kind} caches are not supported by kiln yet; use type=local, type=registry or type=inline"
                ),
            ));
        }
        _ => {
            return Err(bad(
                flag,
                value,
                format!(
                    "unknown cache type {kind:?}; kiln supports type=local, type=registry and type=inline"
                ),
            ));
        }
    };
    Ok((kind, attrs.into_iter().collect()))
}

/// `true` or `false`, as buildx spells booleans.
fn boolean(flag: &'static str, value: &str, key: &str, val: &str) -> Result<bool, RequestError> {
    match val {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(flag, value, format!("{key}= is true or false"))),
    }
}

/// A registry cache's `ref=`, checked for presence only: the engine parses it.
fn registry_location(
    flag: &'static str,
    value: &str,
    reference: Option<String>,
    insecure: bool,
) -> Result<CacheLocation, RequestError> {
    let reference = reference.filter(|r| !r.is_empty()).ok_or_else(|| {
        bad(
            flag,
            value,
            "type=registry needs ref=HOST/REPO:TAG (the cache's manifest in a registry)",
        )
    })?;
    Ok(CacheLocation::Registry {
        reference,
        insecure,
    })
}

fn check_tag(flag: &'static str, value: &str, tag: &str) -> Result<(), RequestError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && tag.as_bytes()[0] != b'.'
        && tag.as_bytes()[0] != b'-';
    if ok {
        Ok(())
    } else {
        Err(bad(
            flag,
            value,
            format!(
                "tag={tag:?} is not a tag: use up to 128 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
            ),
        ))
    }
}

fn refuse_attr(flag: &'static str, value: &str, key: &str, known: &str) -> RequestError {
    if LATER_ATTRS.contains(&key) {
        bad(
            flag,
            value,
            format!("{key}= is not supported by kiln yet; remove it"),
        )
    } else {
        bad(
            flag,
            value,
            format!("unknown attribute {key:?}; it takes {known}"),
        )
    }
}

impl CacheExportSpec {
    /// Parses `type=local,dest=DIR[,mode=min|max][,tag=TAG]` or
    /// `type=registry,ref=REF[,mode=min|max][,registry.insecure=true]` (or a bare `REF`),
    /// either with `[,ignore-error=true]`.
    pub fn parse(value: &str) -> Result<CacheExportSpec, RequestError> {
        const FLAG: &str = "cache-to";
        let (kind, attrs) = kind_of(FLAG, value)?;
        let (mut dir, mut tag, mut mode) = (None, DEFAULT_TAG.to_owned(), CacheMode::Min);
        let (mut reference, mut insecure, mut ignore_error) = (None, false, false);
        let known = match kind {
            Kind::Local => "dest=, mode=, tag= and ignore-error=",
            Kind::Registry => "ref=, mode=, registry.insecure= and ignore-error=",
            Kind::Inline => "mode=min and ignore-error=",
        };
        for (key, val) in attrs {
            match (kind, key.as_str()) {
                (_, "ignore-error") => ignore_error = boolean(FLAG, value, &key, &val)?,
                (Kind::Inline, "mode") if val == "max" => {
                    return Err(bad(
                        FLAG,
                        value,
                        "type=inline holds only the image's own steps (mode=min), as BuildKit's inline cache; use type=registry,ref=REF,mode=max to keep every stage's steps",
                    ));
                }
                (Kind::Registry, "ref") => reference = Some(val),
                (Kind::Registry, "registry.insecure") => {
                    insecure = boolean(FLAG, value, &key, &val)?;
                }
                (Kind::Local, "dest") => {
                    dir = Some(val).filter(|v| !v.is_empty()).map(PathBuf::from);
                }
                (Kind::Local, "tag") => {
                    check_tag(FLAG, value, &val)?;
                    tag = val;
                }
                (_, "mode") => {
                    mode = match val.as_str() {
                        "min" => CacheMode::Min,
                        "max" => CacheMode::Max,
                        _ => return Err(bad(FLAG, value, "mode= is min or max")),
                    }
                }
                _ => return Err(refuse_attr(FLAG, value, &key, known)),
            }
        }
        let location = match kind {
            Kind::Registry => registry_location(FLAG, value, reference, insecure)?,
            Kind::Inline => CacheLocation::Inline,
            Kind::Local => CacheLocation::Local {
                dir: dir.ok_or_else(|| {
                    bad(
                        FLAG,
                        value,
                        "type=local needs dest=DIR (the OCI layout directory to write)",
                    )
                })?,
                tag,
            },
        };
        Ok(CacheExportSpec {
            location,
            mode,
            ignore_error,
        })
    }
}

impl CacheImportSpec {
    /// Parses `type=local,src=DIR[,tag=TAG]` or
    /// `type=registry,ref=REF[,registry.insecure=true][,ignore-error=true]` (or a bare
    /// `REF`).
    pub fn parse(value: &str) -> Result<CacheImportSpec, RequestError> {
        const FLAG: &str = "cache-from";
        let (kind, attrs) = kind_of(FLAG, value)?;
        if kind == Kind::Inline {
            return Err(bad(
                FLAG,
                value,
                "type=inline is for --cache-to; read an image's inline cache with --cache-from IMAGE (type=registry,ref=IMAGE)",
            ));
        }
        let (mut dir, mut tag) = (None, DEFAULT_TAG.to_owned());
        let (mut reference, mut insecure, mut ignore_error) = (None, false, false);
        let known = match kind {
            Kind::Local => "src= and tag=",
            Kind::Registry | Kind::Inline => "ref=, registry.insecure= and ignore-error=",
        };
        for (key, val) in attrs {
            match (kind, key.as_str()) {
                (Kind::Registry, "ref") => reference = Some(val),
                (Kind::Registry, "registry.insecure") => {
                    insecure = boolean(FLAG, value, &key, &val)?;
                }
                (Kind::Registry, "ignore-error") => {
                    ignore_error = boolean(FLAG, value, &key, &val)?;
                }
                (Kind::Local, "ignore-error") => {
                    return Err(bad(
                        FLAG,
                        value,
                        "ignore-error= changes nothing for type=local (a local cache that cannot be read is already a warning); remove it",
                    ));
                }
                (Kind::Local, "src") => {
                    dir = Some(val).filter(|v| !v.is_empty()).map(PathBuf::from);
                }
                (Kind::Local, "tag") => {
                    check_tag(FLAG, value, &val)?;
                    tag = val;
                }
                (_, "mode") => {
                    return Err(bad(
                        FLAG,
                        value,
                        "mode= belongs to --cache-to; remove it here",
                    ));
                }
                _ => return Err(refuse_attr(FLAG, value, &key, known)),
            }
        }
        let location = match kind {
            Kind::Registry | Kind::Inline => registry_location(FLAG, value, reference, insecure)?,
            Kind::Local => CacheLocation::Local {
                dir: dir.ok_or_else(|| {
                    bad(
                        FLAG,
                        value,
                        "type=local needs src=DIR (an OCI layout written by --cache-to type=local)",
                    )
                })?,
                tag,
            },
        };
        Ok(CacheImportSpec {
            location,
            ignore_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` as `--cache-to` (`to`) or `--cache-from`; `Ok` is the location's
    /// display and the mode, `Err` a fragment of the message.
    fn check(to: bool, input: &str, expected: Result<(&str, CacheMode), &str>) {
        let got = if to {
            CacheExportSpec::parse(input).map(|s| (s.location.display(), s.mode))
        } else {
            CacheImportSpec::parse(input).map(|s| (s.location.display(), CacheMode::Min))
        };
        match expected {
            Ok((place, mode)) => assert_eq!(got, Ok((place.to_owned(), mode)), "{input}"),
            Err(fragment) => {
                let err = got.expect_err(input).to_string();
                assert!(err.contains(fragment), "{input}: {err}");
            }
        }
    }

    #[test]
    fn cache_to() {
        check(true, "type=local,dest=/c", Ok(("/c", CacheMode::Min)));
        check(
            true,
            "type=local,dest=/c,mode=max",
            Ok(("/c", CacheMode::Max)),
        );
        check(
            true,
            "type=local,dest=/c,tag=v1",
            Ok(("/c:v1", CacheMode::Min)),
        );
        check(true, "type=local", Err("needs dest=DIR"));
        check(true, "type=local,dest=", Err("needs dest=DIR"));
        check(true, "type=local,dest=/c,mode=all", Err("min or max"));
        check(
            true,
            "type=nope,dest=/c",
            Err("unknown cache type \"nope\""),
        );
        check(true, "type=inline", Ok(("inline", CacheMode::Min)));
        check(true, "type=inline,mode=min", Ok(("inline", CacheMode::Min)));
        check(
            true,
            "type=inline,mode=max",
            Err("holds only the image's own steps (mode=min)"),
        );
        check(
            true,
            "type=inline,ref=r/x",
            Err("unknown attribute \"ref\"; it takes mode=min"),
        );
        check(false, "type=inline", Err("type=inline is for --cache-to"));
        check(
            true,
            "type=gha",
            Err("type=gha caches are not supported by kiln yet"),
        );
        check(
            true,
            "type=registry,ref=r/x:c,mode=max",
            Ok(("r/x:c", CacheMode::Max)),
        );
        check(true, "type=registry", Err("needs ref=HOST/REPO:TAG"));
        check(true, "type=registry,ref=", Err("needs ref=HOST/REPO:TAG"));
        check(
            true,
            "type=registry,ref=r/x,tag=v1",
            Err("unknown attribute \"tag\"; it takes ref="),
        );
        check(
            true,
            "type=registry,ref=r/x,ignore-error=yes",
            Err("ignore-error= is true or false"),
        );
        check(
            true,
            "type=registry,ref=r/x,compression=zstd",
            Err("compression= is not supported by kiln yet"),
        );
        check(
            true,
            "type=local,dest=/c,ref=r/x",
            Err("unknown attribute \"ref\""),
        );
        check(true, "dest=/c", Err("missing type="));
        check(
            true,
            "type=local,dest=/c,compression=zstd",
            Err("compression= is not supported by kiln yet"),
        );
        check(
            true,
            "type=local,dest=/c,cache-mounts=true",
            Err("cache-mounts= is not supported"),
        );
        check(
            true,
            "type=local,dest=/c,colour=red",
            Err("unknown attribute \"colour\""),
        );
        check(true, "type=local,dest=/c,tag=../x", Err("is not a tag"));
        check(true, "host/repo:tag", Ok(("host/repo:tag", CacheMode::Min)));
    }

    #[test]
    fn cache_from() {
        check(false, "type=local,src=/c", Ok(("/c", CacheMode::Min)));
        check(
            false,
            "type=local,src=/c,tag=main",
            Ok(("/c:main", CacheMode::Min)),
        );
        check(
            false,
            "type=local,dest=/c",
            Err("unknown attribute \"dest\""),
        );
        check(false, "type=local", Err("needs src=DIR"));
        check(
            false,
            "type=local,src=/c,mode=max",
            Err("belongs to --cache-to"),
        );
        check(
            false,
            "type=local,src=/c,digest=sha256:00",
            Err("digest= is not supported"),
        );
        check(
            false,
            "host/repo:tag",
            Ok(("host/repo:tag", CacheMode::Min)),
        );
        check(
            false,
            "type=registry,ref=h/r:t,ignore-error=true,registry.insecure=true",
            Ok(("h/r:t", CacheMode::Min)),
        );
        check(
            false,
            "type=local,src=/c,ignore-error=true",
            Err("changes nothing for type=local"),
        );
        check(
            false,
            "type=registry,ref=h/r:t,mode=max",
            Err("belongs to --cache-to"),
        );
    }
}
