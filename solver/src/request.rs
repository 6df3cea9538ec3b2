//! The parsers for the `docker buildx build` value syntaxes (`--output`, `--secret`,
//! `--ssh`, `--build-context`, `--network`) and the plain data they give; the engine's
//! `BuildRequest` holds their results.
//!
//! Everything here is plain data, checked when it is parsed, so that a bad flag is a
//! usage error before anything runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// An error in a flag's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The value is malformed; the message says how it should look.
    #[error("--{flag} {value:?}: {reason}")]
    BadValue {
        /// The flag without dashes, e.g. `output`.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong and how it should look.
        reason: String,
    },
}

pub(crate) fn bad(flag: &'static str, value: &str, reason: impl Into<String>) -> RequestError {
    RequestError::BadValue {
        flag,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Network mode for RUN steps, as `--network` and `RUN --network` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// BuildKit's default for builds: an own network namespace with outbound access
    /// (NAT) and no view of the host's loopback (`kiln_sandbox::Network::Default`).
    #[default]
    Default,
    /// Only a loopback interface.
    None,
    /// The host's network namespace, its loopback included; needs `--allow
    /// network.host`, as in BuildKit.
    Host,
}

impl NetworkMode {
    /// Parses `default`, `none` or `host`.
    pub fn parse(value: &str) -> Result<NetworkMode, RequestError> {
        match value {
            "default" | "" => Ok(NetworkMode::Default),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            _ => Err(bad("network", value, "expected default, none or host")),
        }
    }
}

/// One `--output`/`-o` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// `image`, `registry`, `oci`, `docker`, `local` or `tar`.
    pub kind: String,
    /// The other `key=value` attributes, e.g. `dest`, `name`, `push`, `compression`.
    pub attrs: BTreeMap<String, String>,
}

const OUTPUT_KINDS: &[&str] = &["image", "registry", "oci", "docker", "local", "tar"];

impl OutputSpec {
    /// Parses `type=oci,dest=out.tar`; a bare path means `type=local,dest=PATH` and `-`
    /// means a tar on stdout, as in buildx.
    pub fn parse(value: &str) -> Result<OutputSpec, RequestError> {
        if !value.contains('=') {
            let (kind, dest) = if value == "-" {
                ("tar", "-")
            } else {
                ("local", value)
            };
            return Ok(OutputSpec {
                kind: kind.to_owned(),
                attrs: BTreeMap::from([("dest".to_owned(), dest.to_owned())]),
            });
        }
        let mut attrs = csv_pairs("output", value)?;
        let kind = attrs.remove("type").ok_or_else(|| {
            bad(
                "output",
                value,
                "missing type=...; e.g. type=oci,dest=image.tar",
            )
        })?;
        if !OUTPUT_KINDS.contains(&kind.as_str()) {
            return Err(bad(
                "output",
                value,
                format!(
                    "unknown type {kind:?}; expected one of {}",
                    OUTPUT_KINDS.join(", ")
                ),
            ));
        }
        if matches!(kind.as_str(), "oci" | "docker" | "local" | "tar")
            && !attrs.contains_key("dest")
        {
            return Err(bad("output", value, format!("type={kind} needs dest=PATH")));
        }
        Ok(OutputSpec { kind, attrs })
    }
}

/// Where a `--secret`'s value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the host.
    File(PathBuf),
    /// An environment variable of the kiln process.
    Env(String),
    /// The value itself, held in memory (a thin client sent it over its connection to
    /// `kiln serve`: it never touches the server's disk outside the step's private file).
    Value(SecretValue),
}

/// A secret's bytes; `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub std::sync::Arc<[u8]>);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({} bytes)", self.0.len())
    }
}

/// One `--secret id=X,src=FILE` or `--secret id=X,env=VAR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The id `RUN --mount=type=secret,id=X` names.
    pub id: String,
    /// Where the value comes from.
    pub source: SecretSource,
}

impl SecretSpec {
    /// Checks, before the build, that a file secret is a regular file of at most
    /// [`crate::input_file::MAX_SECRET_SIZE`] (as buildx stats its sources up front).
    pub fn check(&self) -> Result<(), crate::input_file::InputFileError> {
        if let SecretSource::File(path) = &self.source {
            crate::input_file::read_regular_file(
                path,
                &format!("--secret id={}", self.id),
                crate::input_file::MAX_SECRET_SIZE,
            )?;
        }
        Ok(())
    }

    /// Parses buildx's syntax: `id=X[,src=FILE|,source=FILE|,env=VAR][,type=file|env]`.
    /// With no source, `env=ID` is tried for `type=env` and `src=ID` otherwise, as buildx does.
    pub fn parse(value: &str) -> Result<SecretSpec, RequestError> {
        let attrs = csv_pairs("secret", value)?;
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut kind = None;
        for (key, val) in attrs {
            match key.as_str() {
                "id" => id = Some(val),
                "src" | "source" => src = Some(val),
                "env" => env = Some(val),
                "type" => kind = Some(val),
                _ => {
                    return Err(bad(
                        "secret",
                        value,
                        format!("unknown key {key:?}; expected id, src, env or type"),
                    ));
                }
            }
        }
        let id =
            id.ok_or_else(|| bad("secret", value, "missing id=...; e.g. id=npmrc,src=.npmrc"))?;
        if id.is_empty() {
            return Err(bad(
                "secret",
                value,
                "the id must not be empty; e.g. id=npmrc,src=.npmrc",
            ));
        }
        let source = match (src, env, kind.as_deref()) {
            (Some(_), Some(_), _) => {
                return Err(bad("secret", value, "give either src= or env=, not both"));
            }
            (Some(src), None, Some("env")) => SecretSource::Env(src),
            (Some(src), None, _) => SecretSource::File(PathBuf::from(src)),
            (None, Some(env), _) => SecretSource::Env(env),
            (None, None, Some("env")) => SecretSource::Env(id.clone()),
            (None, None, Some("file") | None) => SecretSource::File(PathBuf::from(&id)),
            (None, None, Some(other)) => {
                return Err(bad(
                    "secret",
                    value,
                    format!("unknown type {other:?}; expected file or env"),
                ));
            }
        };
        Ok(SecretSpec { id, source })
    }
}

/// One `--ssh default[=SOCKET|KEY,...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSpec {
    /// The id `RUN --mount=type=ssh,id=X` names (`default` when not given).
    pub id: String,
    /// Agent sockets or key files; empty means `$SSH_AUTH_SOCK`.
    pub paths: Vec<PathBuf>,
}

impl SshSpec {
    /// Parses `default`, `default=$SSH_AUTH_SOCK`, `id=key1,key2`.
    pub fn parse(value: &str) -> Result<SshSpec, RequestError> {
        let (id, paths) = match value.split_once('=') {
            Some((id, paths)) => (id, paths.split(',').map(PathBuf::from).collect()),
            None => (value, Vec::new()),
        };
        if id.is_empty() {
            return Err(bad(
                "ssh",
                value,
                "missing id; e.g. default or default=$SSH_AUTH_SOCK",
            ));
        }
        Ok(SshSpec {
            id: id.to_owned(),
            paths,
        })
    }
}

/// Where a named build context (`--build-context NAME=VALUE`) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory.
    Dir(PathBuf),
    /// An image, `docker-image://REF`.
    Image(String),
    /// An image in an OCI layout, `oci-layout://PATH[:TAG|@DIGEST]`.
    OciLayout(String),
    /// Another kind buildx knows (a git or https URL): kept as written.
    Url(String),
}

/// Parses `NAME=VALUE` of `--build-context`.
pub fn parse_build_context(value: &str) -> Result<(String, NamedContext), RequestError> {
    let (name, source) = value.split_once('=').ok_or_else(|| {
        bad(
            "build-context",
            value,
            "expected NAME=DIR, NAME=docker-image://REF or NAME=oci-layout://PATH",
        )
    })?;
    if name.is_empty() || source.is_empty() {
        return Err(bad(
            "build-context",
            value,
            "name and value must not be empty",
        ));
    }
    let context = if let Some(image) = source.strip_prefix("docker-image://") {
        NamedContext::Image(image.to_owned())
    } else if let Some(layout) = source.strip_prefix("oci-layout://") {
        NamedContext::OciLayout(layout.to_owned())
    } else if source.contains("://") || source.starts_with("git@") {
        NamedContext::Url(source.to_owned())
    } else {
        NamedContext::Dir(PathBuf::from(source))
    };
    Ok((name.to_owned(), context))
}

/// Parses `KEY=VALUE` of `--build-arg`, `--label`, `--annotation`. `KEY` alone takes the
/// value from `lookup` (the environment, for `--build-arg`), as docker does; it is left
/// out when the variable is unset.
pub fn parse_key_value(
    flag: &'static str,
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(String, String)>, RequestError> {
    match value.split_once('=') {
        Some(("", _)) => Err(bad(flag, value, "the name before = must not be empty")),
        Some((key, val)) => Ok(Some((key.to_owned(), val.to_owned()))),
        None if value.is_empty() => Err(bad(flag, value, "expected KEY=VALUE")),
        None => Ok(lookup(value).map(|val| (value.to_owned(), val))),
    }
}

/// Splits `a=1,"b=x,y"` into pairs, as buildx's CSV values: fields may be quoted.
pub(crate) fn csv_pairs(
    flag: &'static str,
    value: &str,
) -> Result<BTreeMap<String, String>, RequestError> {
    if value.chars().filter(|&c| c == '"').count() % 2 == 1 {
        return Err(bad(flag, value, "a quote is not closed"));
    }
    let mut pairs = BTreeMap::new();
    for field in kiln_parser::csv_fields(value) {
        let (key, val) = field
            .split_once('=')
            .ok_or_else(|| bad(flag, value, format!("{field:?} is not KEY=VALUE")))?;
        pairs.insert(key.trim().to_lowercase(), val.to_owned());
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Expected<'a> = Result<(&'a str, &'a [(&'a str, &'a str)]), &'a str>;

    fn check_output(input: &str, expected: Expected<'_>) {
        let got = OutputSpec::parse(input);
        match expected {
            Ok((kind, attrs)) => {
                let got = got.expect(input);
                assert_eq!(got.kind, kind, "{input}");
                let want: BTreeMap<String, String> = attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                assert_eq!(got.attrs, want, "{input}");
            }
            Err(fragment) => {
                let err = got.expect_err(input).to_string();
                assert!(err.contains(fragment), "{input}: {err}");
            }
        }
    }

    #[test]
    fn outputs() {
        check_output("type=oci,dest=out.tar", Ok(("oci", &[("dest", "out.tar")])));
        check_output(
            "type=image,name=a:1,push=true",
            Ok(("image", &[("name", "a:1"), ("push", "true")])),
        );
        check_output(
            "type=registry,\"name=a:1,b:2\"",
            Ok(("registry", &[("name", "a:1,b:2")])),
        );
        check_output("out", Ok(("local", &[("dest", "out")])));
        check_output("-", Ok(("tar", &[("dest", "-")])));
        check_output("type=oci", Err("needs dest=PATH"));
        check_output("type=zip,dest=x", Err("unknown type \"zip\""));
        check_output("dest=x,name", Err("is not KEY=VALUE"));
        check_output("dest=x", Err("missing type="));
    }

    #[test]
    fn secrets() {
        let s = SecretSpec::parse("id=npm,src=/run/npmrc").expect("parse");
        assert_eq!(s.source, SecretSource::File("/run/npmrc".into()));
        let s = SecretSpec::parse("id=TOKEN,env=GH_TOKEN").expect("parse");
        assert_eq!(s.source, SecretSource::Env("GH_TOKEN".into()));
        let s = SecretSpec::parse("id=TOKEN,type=env").expect("parse");
        assert_eq!(s.source, SecretSource::Env("TOKEN".into()));
        let s = SecretSpec::parse("id=cert").expect("parse");
        assert_eq!(s.source, SecretSource::File("cert".into()));
        assert!(SecretSpec::parse("src=x").is_err());
        let err = SecretSpec::parse("id=,src=x").expect_err("empty id");
        assert!(
            err.to_string().contains("the id must not be empty"),
            "{err}"
        );
        assert!(SecretSpec::parse("id=").is_err());
        assert!(SecretSpec::parse("id=x,src=a,env=b").is_err());
        assert!(SecretSpec::parse("id=x,color=red").is_err());
    }

    #[test]
    fn key_values_take_unset_values_from_the_environment() {
        let env = |k: &str| (k == "HOME").then(|| "/root".to_owned());
        assert_eq!(
            parse_key_value("build-arg", "A=1=2", &env).expect("kv"),
            Some(("A".into(), "1=2".into()))
        );
        assert_eq!(
            parse_key_value("build-arg", "HOME", &env).expect("kv"),
            Some(("HOME".into(), "/root".into()))
        );
        assert_eq!(
            parse_key_value("build-arg", "UNSET", &env).expect("kv"),
            None
        );
        assert!(parse_key_value("build-arg", "=x", &env).is_err());
    }

    #[test]
    fn build_contexts_and_ssh() {
        assert_eq!(
            parse_build_context("base=docker-image://alpine:3").expect("ctx"),
            ("base".into(), NamedContext::Image("alpine:3".into()))
        );
        assert_eq!(
            parse_build_context("src=../src").expect("ctx"),
            ("src".into(), NamedContext::Dir("../src".into()))
        );
        assert!(parse_build_context("nothing").is_err());
        assert_eq!(
            SshSpec::parse("default").expect("ssh"),
            SshSpec {
                id: "default".into(),
                paths: vec![]
            }
        );
        assert_eq!(SshSpec::parse("k=/a,/b").expect("ssh").paths.len(), 2);
        assert!(NetworkMode::parse("bridge").is_err());
    }
}
