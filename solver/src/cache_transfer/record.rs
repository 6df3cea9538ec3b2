//! kiln's cache record: the config blob of a cache manifest (`docs/cache.md`).
//!
//! A cache is an OCI image manifest whose config has the media type
//! [`RECORD_MEDIA_TYPE`] and whose layers are the steps' diffs as ordinary layer blobs.
//! The record lists, per step, its cache key and how to rebuild its result from them.

use kiln_snapshotter::Digest;
use serde::{Deserialize, Serialize};

use crate::cache_key::CacheKey;

/// The config media type of a kiln cache manifest.
pub const RECORD_MEDIA_TYPE: &str = "application/vnd.kiln.cache.record.v1+json";

/// The record format's version; a record of another version is refused.
pub const RECORD_VERSION: u32 = 1;

/// The only layer media type a v1 record carries: the local store's plain tar, whose
/// digest is its diff_id.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// The whole record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The `SOURCE_DATE_EPOCH` the layers were written with (their mtimes are clamped
    /// to it), none when unset.
    pub source_date_epoch: Option<i64>,
    /// The steps, in the order of the build's graph.
    pub steps: Vec<StepRecord>,
}

/// One step's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// The step's cache key (64 hex digits).
    pub key: CacheKey,
    /// The step as the exporting build labelled it; informational, never trusted.
    pub step: String,
    /// When the result was made (seconds since the epoch): the history time of its
    /// layer, so that a hit gives the same image as on the exporting machine.
    pub created: i64,
    /// How to make the result.
    pub result: StepResult,
}

/// What a step's result is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepResult {
    /// A filesystem: `parent`'s (the step input with that key; none: empty) with
    /// `blob` applied.
    #[serde(rename_all = "camelCase")]
    Layer {
        /// The key of the input the layer goes on.
        parent: Option<CacheKey>,
        /// The step's own changes.
        blob: LayerRecord,
    },
    /// The same filesystem as the input with that key (a `COPY --link` of nothing).
    Input {
        /// The input's key.
        key: CacheKey,
    },
    /// No filesystem.
    Nothing,
}

/// A layer blob, as the manifest lists it, with its diff_id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    /// The blob's digest.
    pub digest: Digest,
    /// The uncompressed tar's digest.
    #[serde(rename = "diffID")]
    pub diff_id: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// The blob's media type.
    pub media_type: String,
}

impl Record {
    /// Parses a record, refusing other versions.
    pub fn parse(bytes: &[u8]) -> Result<Record, String> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version = serde_json::from_slice(bytes)
            .map_err(|e| format!("the record is not a kiln cache record: {e}"))?;
        if version.version != RECORD_VERSION {
            return Err(format!(
                "the record is version {}; this kiln reads version {RECORD_VERSION} (export the cache again with this kiln)",
                version.version
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("the record is damaged: {e}"))
    }

    /// The record's bytes (canonical: fields in declaration order).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serialises (plain data)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_key::KeyBuilder;

    fn key(text: &str) -> CacheKey {
        let mut b = KeyBuilder::new("t");
        b.part("x", text.as_bytes());
        b.finish().0
    }

    /// Parses `text`; `Ok` is the number of steps, `Err` a fragment of the message.
    fn check(text: &str, expected: Result<usize, &str>) {
        match (Record::parse(text.as_bytes()), expected) {
            (Ok(record), Ok(steps)) => assert_eq!(record.steps.len(), steps, "{text}"),
            (Err(e), Err(fragment)) => assert!(e.contains(fragment), "{text}: {e}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let layer = LayerRecord {
            digest: Digest::of(b"tar"),
            diff_id: Digest::of(b"tar"),
            size: 3,
            media_type: LAYER_MEDIA_TYPE.to_owned(),
        };
        let record = Record {
            version: RECORD_VERSION,
            source_date_epoch: Some(0),
            steps: vec![
                StepRecord {
                    key: key("a"),
                    step: "[1/2] RUN x".to_owned(),
                    created: 5,
                    result: StepResult::Layer {
                        parent: None,
                        blob: layer,
                    },
                },
                StepRecord {
                    key: key("b"),
                    step: "[2/2] COPY --link".to_owned(),
                    created: 6,
                    result: StepResult::Input { key: key("a") },
                },
            ],
        };
        let text = String::from_utf8(record.to_bytes()).expect("utf-8");
        assert!(text.contains("\"diffID\""), "{text}");
        assert_eq!(Record::parse(text.as_bytes()), Ok(record));
        check(&text, Ok(2));
        check(r#"{"version":1,"sourceDateEpoch":null,"steps":[]}"#, Ok(0));
        check(r#"{"version":2,"steps":[]}"#, Err("version 2"));
        check(r#"{"schemaVersion":2}"#, Err("not a kiln cache record"));
        check(
            r#"{"version":1,"sourceDateEpoch":null,"steps":[{"key":"zz"}]}"#,
            Err("damaged"),
        );
    }
}
