//! `Digest`: a checked `sha256:<hex>` content address.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use super::error::{Error, Result};

/// A sha256 content digest, `sha256:` and 64 lowercase hex digits, checked on parse.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`.
    pub fn parse(text: &str) -> Result<Digest> {
        let ok = text.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Digest(text.to_owned()))
        } else {
            Err(Error::InvalidDigest {
                input: text.to_owned(),
            })
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(sha2::Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher holds.
    pub fn from_hasher(hasher: sha2::Sha256) -> Digest {
        // sha2 0.11 output is a byte array: hex-encode it explicitly.
        Digest(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits, as used in `blobs/sha256/<hex>` paths.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<&str>) {
        let got = Digest::parse(input).ok().map(|d| d.as_str().to_owned());
        assert_eq!(got.as_deref(), expected, "input {input:?}");
    }

    #[test]
    fn parses_only_sha256_hex() {
        let good = format!("sha256:{}", "a".repeat(64));
        check(&good, Some(&good));
        check(&format!("sha256:{}", "A".repeat(64)), None);
        check(&format!("sha256:{}", "a".repeat(63)), None);
        check(&format!("sha512:{}", "a".repeat(64)), None);
        check("", None);
    }

    #[test]
    fn digest_of_empty_is_the_known_one() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
