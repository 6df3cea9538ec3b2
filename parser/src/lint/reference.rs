//! Whether a string is an image reference Docker accepts (`ParseNormalizedNamed` of
//! distribution's `reference` package): `[domain[:port]/]path[:tag][@digest]`, the path
//! lowercase, the name at most 255 characters, and not a bare 64-hex image ID.

const NAME_TOTAL_LENGTH_MAX: usize = 255;

pub(crate) fn is_valid(s: &str) -> bool {
    if s.is_empty() || (s.len() == 64 && s.chars().all(|c| matches!(c, 'a'..='f' | '0'..='9'))) {
        return false;
    }
    let (domain, remainder) = split_domain(s);
    let remote = remainder
        .split_once(':')
        .map_or(remainder.as_str(), |(r, _)| r);
    if remote.to_lowercase() != remote {
        return false;
    }
    reference(&format!("{domain}/{remainder}"))
}

/// `docker.io` and `library/` where the name has none, as `splitDockerDomain` does.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".to_owned();
    }
    if domain == "docker.io" && !remainder.contains('/') {
        remainder = format!("library/{remainder}");
    }
    (domain, remainder)
}

/// The anchored reference grammar: `name(:tag)?(@digest)?`.
fn reference(s: &str) -> bool {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if digest.is_some_and(|d| !is_digest(d)) {
        return false;
    }
    let last_slash = rest.rfind('/').unwrap_or(0);
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if colon > last_slash => (&rest[..colon], Some(&rest[colon + 1..])),
        _ => (rest, None),
    };
    if tag.is_some_and(|t| !is_tag(t)) {
        return false;
    }
    name.len() <= NAME_TOTAL_LENGTH_MAX && is_name(name)
}

/// `(domain/)?component(/component)*`.
fn is_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    let all_paths = parts.iter().all(|p| is_path_component(p));
    let with_domain =
        parts.len() > 1 && is_domain(parts[0]) && parts[1..].iter().all(|p| is_path_component(p));
    all_paths || with_domain
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn is_path_component(p: &str) -> bool {
    let bytes = p.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        match bytes[i] {
            b'.' => i += 1,
            b'_' if bytes.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// A host name, IPv4 address or `[IPv6]`, with an optional `:port`.
fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return false;
        }
        match after {
            "" => return true,
            _ => ("", after.strip_prefix(':')),
        }
    } else {
        match d.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (d, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    if d.starts_with('[') {
        return port.is_some();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = t.chars();
    chars.next().is_some_and(word)
        && t.len() <= 128
        && chars.all(|c| word(c) || c == '.' || c == '-')
}

/// `algorithm:hex` with a digest algorithm Docker knows and its length of lowercase hex.
fn is_digest(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return false;
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == length && hex.chars().all(|c| matches!(c, 'a'..='f' | '0'..='9'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &str, expected: bool) {
        assert_eq!(is_valid(s), expected, "{s}");
    }

    #[test]
    fn references() {
        for ok in [
            "scratch",
            "busybox:stable",
            "alpine:3.20",
            "library/alpine",
            "docker.io/library/alpine:latest",
            "ghcr.io/owner/repo-name__x.y:v1.2_3",
            "localhost:5000/app",
            "Registry.Example.com/app",
            "[::1]:5000/app:tag",
            "10.0.0.1:5000/a/b/c",
            "alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "build-stage",
        ] {
            check(ok, true);
        }
        for bad in [
            "",
            "busybox:",
            "Alpine",
            "alpine:-x",
            "alpine:tag:more",
            "a//b",
            "-a",
            "a-",
            "alpine@sha256:abc",
            "alpine@md5:0000",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a b",
        ] {
            check(bad, false);
        }
    }
}
