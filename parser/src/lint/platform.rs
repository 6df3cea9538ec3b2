//! Platform specifiers (`linux/arm64/v8`) as containerd's `platforms.Parse` reads them,
//! and the platform kiln builds for when none is given.

/// A parsed, normalised platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Platform {
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) variant: String,
}

impl Platform {
    /// `os/arch[/variant]`.
    pub(crate) fn format(&self) -> String {
        let mut out = format!("{}/{}", self.os, self.architecture);
        if !self.variant.is_empty() {
            out.push('/');
            out.push_str(&self.variant);
        }
        out
    }

    /// As BuildKit prints a platform in messages (`FormatAll(Normalize(p))`): the
    /// variant an architecture implies is dropped (`linux/arm64`, not `.../v8`).
    pub(crate) fn format_normalized(&self) -> String {
        let (architecture, variant) = normalize_arch(&self.architecture, &self.variant);
        Platform {
            os: normalize_os(&self.os),
            architecture,
            variant,
        }
        .format()
    }
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// Linux on the architecture this program was built for (Go's names).
pub(crate) fn host() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "x86" => ("386", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "powerpc64" => ("ppc64le", ""),
        "loongarch64" => ("loong64", ""),
        "mips64" => ("mips64le", ""),
        other => (other, ""),
    };
    Platform {
        os: "linux".to_owned(),
        architecture: architecture.to_owned(),
        variant: variant.to_owned(),
    }
}

fn component_ok(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `os[(version)]`, `arch`, `os/arch` or `os/arch/variant`; `None` when containerd
/// refuses it.
pub(crate) fn parse(specifier: &str) -> Option<Platform> {
    if specifier.contains('*') {
        return None;
    }
    let parts: Vec<&str> = specifier.split('/').collect();
    let mut os_part = *parts.first()?;
    // `windows(10.0.17763)/amd64`: an OS version in parentheses.
    if let Some((os, rest)) = os_part.split_once('(') {
        let version = rest.strip_suffix(')')?;
        if !version.is_empty() && !component_ok(version) {
            return None;
        }
        os_part = os;
    }
    if !component_ok(os_part) || !parts[1..].iter().all(|p| component_ok(p)) {
        return None;
    }
    let host = host();
    match parts.as_slice() {
        [_] => {
            let os = normalize_os(os_part);
            if KNOWN_OS.contains(&os.as_str()) {
                return Some(Platform { os, ..host });
            }
            let (architecture, mut variant) = normalize_arch(os_part, "");
            if architecture == "arm" && variant == "v7" {
                variant.clear();
            }
            KNOWN_ARCH
                .contains(&architecture.as_str())
                .then_some(Platform {
                    os: host.os,
                    architecture,
                    variant,
                })
        }
        [_, arch] => {
            let (architecture, variant) = normalize_arch(arch, "");
            Some(Platform {
                os: normalize_os(os_part),
                architecture,
                variant,
            })
        }
        [_, arch, variant] => {
            let (architecture, mut variant) = normalize_arch(arch, variant);
            if architecture == "arm64" && variant.is_empty() {
                variant = "v8".to_owned();
            }
            Some(Platform {
                os: normalize_os(os_part),
                architecture,
                variant,
            })
        }
        _ => None,
    }
}

fn normalize_os(os: &str) -> String {
    match os.to_lowercase().as_str() {
        "macos" => "darwin".to_owned(),
        other => other.to_owned(),
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    let (arch, variant) = match (arch.as_str(), variant.as_str()) {
        ("i386", _) => ("386", ""),
        ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64", ""),
        ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v),
        ("aarch64" | "arm64", "8" | "v8" | "v8.0") => ("arm64", ""),
        ("aarch64" | "arm64", "9" | "9.0" | "v9.0") => ("arm64", "v9"),
        ("aarch64" | "arm64", v) => ("arm64", v),
        ("armhf", _) => ("arm", "v7"),
        ("armel", _) => ("arm", "v6"),
        ("arm", "" | "7") => ("arm", "v7"),
        ("arm", "5") => ("arm", "v5"),
        ("arm", "6") => ("arm", "v6"),
        ("arm", "8") => ("arm", "v8"),
        (a, v) => (a, v),
    };
    (arch.to_owned(), variant.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(specifier: &str, expected: Option<&str>) {
        assert_eq!(
            parse(specifier).map(|p| p.format()).as_deref(),
            expected,
            "{specifier}"
        );
    }

    #[test]
    fn specifiers() {
        check("linux/amd64", Some("linux/amd64"));
        check("Linux/x86_64", Some("linux/amd64"));
        check("linux/arm64/v8", Some("linux/arm64/v8"));
        check("linux/aarch64", Some("linux/arm64"));
        check("linux/arm", Some("linux/arm/v7"));
        check("windows(10.0.17763)/amd64", Some("windows/amd64"));
        check("linux/", None);
        check("linux/*", None);
        check("banana", None);
        assert_eq!(parse("linux").map(|p| p.os).as_deref(), Some("linux"));
        assert_eq!(
            parse("arm64").map(|p| p.architecture).as_deref(),
            Some("arm64")
        );
    }
}
