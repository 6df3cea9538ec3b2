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
}

impl CacheLocation {
    /// How messages and progress name it: the directory, with `:TAG` when not `latest`.
    pub fn display(&self) -> String {
        match self {
            CacheLocation::Local { dir, tag } if tag == DEFAULT_TAG => dir.display().to_string(),
            CacheLocation::Local { dir, tag } => format!("{}:{tag}", dir.display()),
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
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImportSpec {
    /// Where it is read from.
    pub location: CacheLocation,
}

/// buildx's cache types kiln knows of but does not implement yet.
const LATER_TYPES: &[&str] = &["registry", "inline", "gha", "s3", "azblob"];

/// buildx's attributes kiln knows of but does not implement yet.
const LATER_ATTRS: &[&str] = &[
    "compression",
    "compression-level",
    "force-compression",
    "oci-mediatypes",
    "image-manifest",
    "ignore-error",
    "cache-mounts",
    "digest",
    "ref",
];

fn kind_of(
    flag: &'static str,
    value: &str,
) -> Result<(String, Vec<(String, String)>), RequestError> {
    if !value.contains('=') {
        // buildx reads a bare value as type=registry,ref=VALUE.
        return Err(bad(
            flag,
            value,
            "a bare reference means a registry cache, which kiln does not support yet; use type=local,src=DIR (or dest=DIR for --cache-to)",
        ));
    }
    let mut attrs = csv_pairs(flag, value)?;
    let kind = attrs.remove("type").ok_or_else(|| {
        bad(
            flag,
            value,
            "missing type=...; kiln supports type=local (e.g. type=local,dest=DIR)",
        )
    })?;
    if LATER_TYPES.contains(&kind.as_str()) {
        return Err(bad(
            flag,
            value,
            format!("type={kind} caches are not supported by kiln yet; use type=local"),
        ));
    }
    if kind != "local" {
        return Err(bad(
            flag,
            value,
            format!("unknown cache type {kind:?}; kiln supports type=local"),
        ));
    }
    Ok((kind, attrs.into_iter().collect()))
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
            format!("unknown attribute {key:?}; type=local takes {known}"),
        )
    }
}

impl CacheExportSpec {
    /// Parses `type=local,dest=DIR[,mode=min|max][,tag=TAG]`.
    pub fn parse(value: &str) -> Result<CacheExportSpec, RequestError> {
        const FLAG: &str = "cache-to";
        let (_, attrs) = kind_of(FLAG, value)?;
        let (mut dir, mut tag, mut mode) = (None, DEFAULT_TAG.to_owned(), CacheMode::Min);
        for (key, val) in attrs {
            match key.as_str() {
                "dest" => dir = Some(val).filter(|v| !v.is_empty()).map(PathBuf::from),
                "tag" => {
                    check_tag(FLAG, value, &val)?;
                    tag = val;
                }
                "mode" => {
                    mode = match val.as_str() {
                        "min" => CacheMode::Min,
                        "max" => CacheMode::Max,
                        _ => return Err(bad(FLAG, value, "mode= is min or max")),
                    }
                }
                _ => return Err(refuse_attr(FLAG, value, &key, "dest=, mode= and tag=")),
            }
        }
        let dir = dir.ok_or_else(|| {
            bad(
                FLAG,
                value,
                "type=local needs dest=DIR (the OCI layout directory to write)",
            )
        })?;
        Ok(CacheExportSpec {
            location: CacheLocation::Local { dir, tag },
            mode,
        })
    }
}

impl CacheImportSpec {
    /// Parses `type=local,src=DIR[,tag=TAG]`.
    pub fn parse(value: &str) -> Result<CacheImportSpec, RequestError> {
        const FLAG: &str = "cache-from";
        let (_, attrs) = kind_of(FLAG, value)?;
        let (mut dir, mut tag) = (None, DEFAULT_TAG.to_owned());
        for (key, val) in attrs {
            match key.as_str() {
                "src" => dir = Some(val).filter(|v| !v.is_empty()).map(PathBuf::from),
                "tag" => {
                    check_tag(FLAG, value, &val)?;
                    tag = val;
                }
                "mode" => {
                    return Err(bad(
                        FLAG,
                        value,
                        "mode= belongs to --cache-to; remove it here",
                    ));
                }
                _ => return Err(refuse_attr(FLAG, value, &key, "src= and tag=")),
            }
        }
        let dir = dir.ok_or_else(|| {
            bad(
                FLAG,
                value,
                "type=local needs src=DIR (an OCI layout written by --cache-to type=local)",
            )
        })?;
        Ok(CacheImportSpec {
            location: CacheLocation::Local { dir, tag },
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
        check(
            true,
            "type=inline",
            Err("type=inline caches are not supported by kiln yet"),
        );
        check(
            true,
            "type=registry,ref=r/x",
            Err("type=registry caches are not supported"),
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
        check(true, "host/repo:tag", Err("registry cache"));
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
    }
}
