//! The registry's digests are the store's [`Digest`] (one content address for all of
//! kiln); [`parse`] checks one that comes from a registry or a reference, as the
//! registry's [`Error`].

pub use kiln_snapshotter::Digest;

use super::error::{Error, Result};

/// Parses `sha256:<64 lowercase hex digits>`, or says what is wrong with it.
pub(super) fn parse(text: &str) -> Result<Digest> {
    Digest::parse(text).ok_or_else(|| Error::InvalidDigest {
        input: text.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<&str>) {
        let got = parse(input).ok().map(|d| d.as_str().to_owned());
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
