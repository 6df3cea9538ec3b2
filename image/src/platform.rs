//! `Platform` (`os/arch[/variant]`) and choosing one manifest out of an index.

use std::fmt;
use std::str::FromStr;

/// A platform that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {input:?}: expected os/arch[/variant], e.g. linux/arm64/v8")]
pub struct PlatformError {
    /// The text given.
    pub input: String,
}

/// A target platform as OCI indexes name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`.
    pub architecture: String,
    /// `v7`, `v8`, ... when the architecture has variants.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform kiln runs on, in GOARCH words.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(text: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = text.split('/').collect();
        let bad = || PlatformError {
            input: text.to_owned(),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: Some((*variant).to_owned()),
            }),
            _ => Err(bad()),
        }
    }

    /// The variant, with the implied defaults (`arm64` is `v8`, `arm` is `v7`).
    fn effective_variant(&self) -> Option<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            (_, Some(v)) => Some(v),
            ("arm64", None) => Some("v8"),
            ("arm", None) => Some("v7"),
            _ => None,
        }
    }

    /// How well an index entry's platform fits this one: `None` = not at all; higher
    /// is better (an exact variant beats an entry that leaves it out).
    pub fn score(&self, candidate: &Platform) -> Option<u8> {
        if candidate.os != self.os || candidate.architecture != self.architecture {
            return None;
        }
        match (self.effective_variant(), candidate.effective_variant()) {
            (None, None) => Some(2),
            (Some(want), Some(have)) if want == have => Some(2),
            (Some(_), None) if candidate.variant.is_none() => Some(1),
            (None, Some(_)) => Some(1),
            _ => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Platform, PlatformError> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(want: &str, have: &str, expected: Option<u8>) {
        let want = Platform::parse(want).unwrap();
        let have = Platform::parse(have).unwrap();
        assert_eq!(want.score(&have), expected, "{want} vs {have}");
    }

    #[test]
    fn matches_variants_like_containerd() {
        check("linux/amd64", "linux/amd64", Some(2));
        check("linux/amd64", "linux/arm64", None);
        check("linux/amd64", "windows/amd64", None);
        check("linux/arm64", "linux/arm64/v8", Some(2));
        check("linux/arm64/v8", "linux/arm64", Some(2));
        check("linux/arm/v7", "linux/arm/v6", None);
        check("linux/arm/v6", "linux/arm", None);
        check("linux/386", "linux/386/x", Some(1));
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().to_string(),
            "linux/arm64/v8"
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v8").is_err());
    }
}
