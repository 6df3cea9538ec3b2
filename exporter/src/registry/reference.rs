//! Image references, normalised the way docker does.
//!
//! `busybox` -> `docker.io/library/busybox:latest`; `host:port/repo:tag`; `name@sha256:...`;
//! `localhost/x`; `[::1]:5000/x`. The first path component is a registry host when it has
//! a `.` or a `:`, is `localhost`, or is a bracketed IPv6 address (docker's rule, in
//! distribution's `reference/normalize.go`); otherwise the name is on Docker Hub, where
//! single-component names live under `library/`.
//!
//! oci-client has its own `Reference`; it cannot parse IPv6 hosts, so kiln parses and
//! checks names here and hands oci-client the parts.

use std::fmt;
use std::str::FromStr;

use super::digest::Digest;
use super::error::{Error, Result};

/// Docker Hub as it appears in normalised names.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API actually answers on.
pub const DOCKER_HUB_API: &str = "index.docker.io";
/// The key docker writes Docker Hub credentials under in `config.json`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A normalised image reference: registry, repository, and a tag, a digest or both.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises a docker image name (a missing tag becomes `latest` unless a
    /// digest is given).
    pub fn parse(input: &str) -> Result<ImageRef> {
        let bad = |reason: &str| Error::InvalidReference {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.is_empty() {
            return Err(bad("empty name"));
        }
        let (name_tag, digest) =
            match input.rsplit_once('@') {
                Some((left, d)) => (
                    left,
                    Some(Digest::parse(d).ok_or_else(|| {
                        bad("the digest must be sha256:<64 lowercase hex digits>")
                    })?),
                ),
                None => (input, None),
            };
        // A tag follows the last ':' only if no '/' comes after it (else it is a port).
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if !name_tag[i..].contains('/') && !name_tag[i..].contains(']') => {
                (&name_tag[..i], Some(name_tag[i + 1..].to_owned()))
            }
            _ => (name_tag, None),
        };
        if let Some(tag) = &tag {
            check_tag(tag).map_err(|r| bad(&r))?;
        }
        let (registry, repository) = split_domain(name);
        check_registry(&registry).map_err(|r| bad(&r))?;
        check_repository(&repository).map_err(|r| bad(&r))?;
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Builds a reference from parts already known to be valid host and repository
    /// names (e.g. a mirror host and the repository of a parsed reference).
    pub fn from_parts(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<ImageRef> {
        let mut text = format!("{registry}/{repository}");
        if let Some(tag) = tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &digest {
            text.push('@');
            text.push_str(digest.as_str());
        }
        let parsed = ImageRef::parse(&text)?;
        // Re-parsing must not move the repository under another host (`library/` rules).
        if parsed.registry != registry.replace(DOCKER_HUB_API, DOCKER_HUB) {
            return Err(Error::InvalidReference {
                input: text,
                reason: format!("{registry:?} is not a registry host"),
            });
        }
        Ok(parsed)
    }

    /// The registry host, `host[:port]` (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host the registry API is reached on (`index.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository path, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Whether the image lives on Docker Hub (and docker.io mirrors apply).
    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<ImageRef> {
        check_tag(tag).map_err(|reason| Error::InvalidReference {
            input: tag.to_owned(),
            reason,
        })?;
        Ok(ImageRef {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to `digest` (the tag is dropped: a digest wins).
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository on another host (a mirror), same tag and digest.
    pub(crate) fn on_host(&self, host: &str) -> ImageRef {
        ImageRef {
            registry: host.to_owned(),
            ..self.clone()
        }
    }

    /// The reference oci-client works with; built from parts so IPv6 hosts pass.
    pub(crate) fn to_oci(&self) -> oci_client::Reference {
        let registry = self.registry.clone();
        let repository = self.repository.clone();
        match (&self.tag, &self.digest) {
            (Some(tag), Some(d)) => oci_client::Reference::with_tag_and_digest(
                registry,
                repository,
                tag.clone(),
                d.to_string(),
            ),
            (_, Some(d)) => oci_client::Reference::with_digest(registry, repository, d.to_string()),
            (tag, None) => oci_client::Reference::with_tag(
                registry,
                repository,
                tag.clone().unwrap_or_else(|| "latest".to_owned()),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<ImageRef> {
        ImageRef::parse(s)
    }
}

/// Normalises a registry host as users type it for `kiln login`/config keys:
/// `https://index.docker.io/v1/`, `docker.io` and `index.docker.io` are Docker Hub;
/// a scheme and a path are dropped.
pub fn normalize_registry_host(input: &str) -> String {
    let rest = input
        .strip_prefix("https://")
        .or_else(|| input.strip_prefix("http://"))
        .unwrap_or(input);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host.to_owned(),
    }
}

/// Whether `host[:port]` is a loopback name, where plain HTTP is allowed without asking.
pub fn is_loopback_host(host: &str) -> bool {
    let name = strip_port(host);
    name == "localhost"
        || name == "[::1]"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `host[:port]` -> `host` (brackets of IPv6 kept).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    host.split(':').next().unwrap_or(host)
}

fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.starts_with('[')
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    if domain == DOCKER_HUB_API {
        domain = DOCKER_HUB.to_owned();
    }
    if domain == DOCKER_HUB && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

fn check_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: use letters, digits, '_', '.', '-' (not first), at most 128"
        ))
    }
}

fn check_registry(host: &str) -> Result<(), String> {
    let (name, port) = if host.starts_with('[') {
        let end = host
            .find(']')
            .ok_or_else(|| format!("invalid registry host {host:?}: unclosed '['"))?;
        let inner = &host[1..end];
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid registry host {host:?}: bad IPv6 address"));
        }
        (&host[..=end], host[end + 1..].strip_prefix(':'))
    } else {
        match host.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if !name.starts_with('[') {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !name.split('.').all(label_ok) {
            return Err(format!("invalid registry host {host:?}"));
        }
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("invalid port in registry host {host:?}"));
    }
    Ok(())
}

fn check_repository(repo: &str) -> Result<(), String> {
    if repo.is_empty() {
        return Err("empty repository name".to_owned());
    }
    if repo.len() > 255 {
        return Err("repository name longer than 255 characters".to_owned());
    }
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".to_owned());
    }
    for component in repo.split('/') {
        if !component_ok(component) {
            return Err(format!(
                "invalid repository component {component:?}: use lowercase letters and digits separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn component_ok(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let sep_ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !sep_ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        match (ImageRef::parse(input), expected) {
            (Ok(r), Ok(want)) => assert_eq!(r.to_string(), want, "input {input:?}"),
            (Err(e), Err(want)) => assert!(
                e.to_string().contains(want),
                "input {input:?}: {e} lacks {want:?}"
            ),
            (got, want) => panic!("input {input:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn normalises_like_docker() {
        let d = format!("sha256:{}", "0".repeat(64));
        check("busybox", Ok("docker.io/library/busybox:latest"));
        check("busybox:1.36", Ok("docker.io/library/busybox:1.36"));
        check("user/app", Ok("docker.io/user/app:latest"));
        check("docker.io/busybox", Ok("docker.io/library/busybox:latest"));
        check(
            "index.docker.io/library/busybox",
            Ok("docker.io/library/busybox:latest"),
        );
        check("127.0.0.1:5000/repo:tag", Ok("127.0.0.1:5000/repo:tag"));
        check("localhost/app", Ok("localhost/app:latest"));
        check("localhost:5000/a/b/c", Ok("localhost:5000/a/b/c:latest"));
        check("ghcr.io/o/r:v1.2-x", Ok("ghcr.io/o/r:v1.2-x"));
        check("[::1]:5000/app:1", Ok("[::1]:5000/app:1"));
        check(
            &format!("busybox@{d}"),
            Ok(&format!("docker.io/library/busybox@{d}")),
        );
        check(&format!("r.io/x:t@{d}"), Ok(&format!("r.io/x:t@{d}")));
        check(
            "my_app__x.y-z--w",
            Ok("docker.io/library/my_app__x.y-z--w:latest"),
        );
    }

    #[test]
    fn rejects_what_docker_rejects() {
        check("", Err("empty"));
        check("Busybox", Err("lowercase"));
        check("r.io/App", Err("lowercase"));
        check("busybox:", Err("invalid tag"));
        check("busybox:-x", Err("invalid tag"));
        check("busybox@sha256:abc", Err("digest"));
        check("a//b", Err("invalid repository component"));
        check("a_-b", Err("invalid repository component"));
        check("r.io:port/x", Err("port"));
        check("[zz]:1/x", Err("IPv6"));
    }

    #[test]
    fn registry_hosts_normalise() {
        assert_eq!(
            normalize_registry_host("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(normalize_registry_host("http://r.io:1/x"), "r.io:1");
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
    }
}
