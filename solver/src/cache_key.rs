//! Cache keys: what identifies the result of one vertex.
//!
//! A key is `blake3(op definition in canonical bytes || keys of its inputs || content
//! digests of the files it reads)` (DESIGN.md, step 4). Each part is written with its
//! length in front, so two different part lists can never hash to the same byte stream.
//! The builder also keeps a readable record of every part, so that a later `--explain`
//! can say which part changed between two builds.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a vertex's result: equal keys mean the same result may be reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CacheKey(#[serde(with = "hex_bytes")] [u8; 32]);

impl CacheKey {
    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parses 64 hex digits, as written by [`CacheKey::to_hex`].
    pub fn from_hex(text: &str) -> Option<CacheKey> {
        blake3::Hash::from_hex(text)
            .ok()
            .map(|hash| CacheKey(*hash.as_bytes()))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", &self.to_hex()[..16])
    }
}

/// One named part of a key, kept for explaining cache misses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPart {
    /// What the part is, e.g. `op`, `input[0]`, `content /src`.
    pub name: String,
    /// A short fingerprint of the part's bytes (hex of their blake3).
    pub fingerprint: String,
}

/// Collects the parts of a key in order and hashes them.
#[derive(Default)]
pub struct KeyBuilder {
    hasher: blake3::Hasher,
    parts: Vec<KeyPart>,
}

impl KeyBuilder {
    /// Starts a key for an operation kind, e.g. `exec` or `file`; the kind is the first part.
    pub fn new(kind: &str) -> KeyBuilder {
        let mut builder = KeyBuilder::default();
        builder.part("kind", kind.as_bytes());
        builder
    }

    /// Adds one named part.
    pub fn part(&mut self, name: &str, bytes: &[u8]) -> &mut KeyBuilder {
        self.hasher.update(&(name.len() as u64).to_le_bytes());
        self.hasher.update(name.as_bytes());
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        let fingerprint = blake3::hash(bytes).to_hex()[..16].to_owned();
        self.parts.push(KeyPart {
            name: name.to_owned(),
            fingerprint,
        });
        self
    }

    /// Adds the key of an input vertex.
    pub fn input(&mut self, index: usize, key: &CacheKey) -> &mut KeyBuilder {
        self.part(&format!("input[{index}]"), key.as_bytes())
    }

    /// Adds a serialisable value as canonical JSON (struct fields in declaration order,
    /// maps must be ordered: use `BTreeMap`).
    pub fn json<T: Serialize>(&mut self, name: &str, value: &T) -> &mut KeyBuilder {
        // Serialising plain data to a Vec cannot fail for the types kiln keys on
        // (no maps with non-string keys, no failing Serialize impls).
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.part(name, &bytes)
    }

    /// The finished key and the record of its parts.
    pub fn finish(self) -> (CacheKey, Vec<KeyPart>) {
        (CacheKey(*self.hasher.finalize().as_bytes()), self.parts)
    }
}

/// Names the parts that differ between two part lists (for `--explain`).
pub fn explain_difference(old: &[KeyPart], new: &[KeyPart]) -> Vec<String> {
    let mut changed = Vec::new();
    for part in new {
        match old.iter().find(|o| o.name == part.name) {
            Some(o) if o.fingerprint == part.fingerprint => {}
            Some(_) => changed.push(format!("{} changed", part.name)),
            None => changed.push(format!("{} is new", part.name)),
        }
    }
    for part in old {
        if !new.iter().any(|n| n.name == part.name) {
            changed.push(format!("{} is gone", part.name));
        }
    }
    changed
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&blake3::Hash::from_bytes(*bytes).to_hex())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        blake3::Hash::from_hex(text.as_str())
            .map(|hash| *hash.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[(&str, &[u8])]) -> CacheKey {
        let mut builder = KeyBuilder::new("test");
        for (name, bytes) in parts {
            builder.part(name, bytes);
        }
        builder.finish().0
    }

    #[test]
    fn parts_are_length_prefixed() {
        // "ab"+"c" and "a"+"bc" must not collide.
        assert_ne!(
            key(&[("x", b"ab"), ("y", b"c")]),
            key(&[("x", b"a"), ("y", b"bc")])
        );
        assert_eq!(key(&[("x", b"ab")]), key(&[("x", b"ab")]));
    }

    #[test]
    fn hex_round_trip() {
        let k = key(&[("x", b"1")]);
        assert_eq!(CacheKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(CacheKey::from_hex("zz"), None);
    }

    #[test]
    fn explains_changed_parts() {
        let mut a = KeyBuilder::new("exec");
        a.part("argv", b"echo 1").part("env", b"A=1");
        let mut b = KeyBuilder::new("exec");
        b.part("argv", b"echo 1")
            .part("env", b"A=2")
            .part("user", b"1");
        let (_, old) = a.finish();
        let (_, new) = b.finish();
        assert_eq!(
            explain_difference(&old, &new),
            vec!["env changed".to_owned(), "user is new".to_owned()]
        );
    }
}
