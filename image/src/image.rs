//! Image assembly in the local store: config and manifest blobs next to the layer blobs,
//! a tag in `content/index.json`; and reading an image back by name or id.

use std::collections::BTreeMap;

use kiln_snapshotter::layer_out::LayerInfo;
use kiln_snapshotter::{Descriptor, Digest, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::config::ImageConfig;

/// OCI media types.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// An OCI image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
    /// `--annotation`s.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// An OCI image manifest for the config blob `config` (its digest and size) and
    /// `layers`, with `annotations`.
    pub fn oci(
        config: (Digest, u64),
        layers: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
    ) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_owned()),
            config: Descriptor {
                media_type: OCI_CONFIG.to_owned(),
                digest: config.0,
                size: config.1,
                annotations: BTreeMap::new(),
            },
            layers,
            annotations,
        }
    }
}

/// An image in the store.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The manifest's descriptor (digest = what a registry would call the image digest).
    pub manifest_descriptor: Descriptor,
    /// The manifest.
    pub manifest: Manifest,
    /// The config.
    pub config: ImageConfig,
    /// The config's digest: the image id, as `docker images` shows it.
    pub id: Digest,
}

fn format_err(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Format {
        path: what.into(),
        reason: e.to_string(),
    }
}

/// Writes `config` and a manifest for `layers` (already in the store) and returns the
/// manifest's descriptor. Nothing is tagged yet.
pub fn write_image(
    store: &Store,
    config: &ImageConfig,
    layers: &[LayerInfo],
    annotations: BTreeMap<String, String>,
) -> Result<StoredImage, StoreError> {
    let config_bytes = serde_json::to_vec(config).map_err(|e| format_err("image config", e))?;
    let config_digest = store.content().write_bytes(&config_bytes)?;
    let layers = layers
        .iter()
        .map(|l| Descriptor {
            media_type: l.media_type.clone(),
            digest: l.digest.clone(),
            size: l.size,
            annotations: BTreeMap::new(),
        })
        .collect();
    let manifest = Manifest::oci(
        (config_digest.clone(), config_bytes.len() as u64),
        layers,
        annotations,
    );
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| format_err("manifest", e))?;
    let manifest_digest = store.content().write_bytes(&manifest_bytes)?;
    Ok(StoredImage {
        manifest_descriptor: Descriptor {
            media_type: OCI_MANIFEST.to_owned(),
            digest: manifest_digest,
            size: manifest_bytes.len() as u64,
            annotations: BTreeMap::new(),
        },
        manifest,
        config: config.clone(),
        id: config_digest,
    })
}

/// Reads the image a manifest descriptor points at.
pub fn read_image(store: &Store, descriptor: &Descriptor) -> Result<StoredImage, StoreError> {
    let manifest_bytes = store.content().read(&descriptor.digest)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| format_err(descriptor.digest.as_str(), e))?;
    let config_bytes = store.content().read(&manifest.config.digest)?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| format_err(manifest.config.digest.as_str(), e))?;
    Ok(StoredImage {
        manifest_descriptor: descriptor.clone(),
        id: manifest.config.digest.clone(),
        manifest,
        config,
    })
}

/// Finds an image by name (`app`, `app:1`), by id (its config digest, whole or a prefix
/// of at least 4 hex digits, with or without `sha256:`), or by manifest digest.
///
/// Two failures are told apart: [`StoreError::ImageNotFound`] when no image has that
/// name or id (a caller may pull it), [`StoreError::DamagedImage`] when one does but its
/// manifest or config is missing, damaged or unreadable (the error names the blob; a
/// caller must not fetch something else in its place).
pub fn find_image(
    store: &Store,
    reference: &str,
) -> Result<(Vec<String>, StoredImage), StoreError> {
    let not_found = || StoreError::ImageNotFound {
        name: reference.to_owned(),
    };
    let damaged = |source: StoreError| StoreError::DamagedImage {
        name: reference.to_owned(),
        source: Box::new(source),
    };
    let tags = store.tags().list()?;
    if let Ok(name) = kiln_snapshotter::normalize_name(reference)
        && let Some((_, descriptor)) = tags.iter().find(|(n, _)| *n == name)
    {
        let image = read_image(store, descriptor).map_err(damaged)?;
        let names = names_of(&tags, &descriptor.digest);
        return Ok((names, image));
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        for (_, descriptor) in &tags {
            let by_manifest = descriptor.digest.hex().starts_with(hex);
            match read_image(store, descriptor) {
                Ok(image) if by_manifest || image.id.hex().starts_with(hex) => {
                    let names = names_of(&tags, &descriptor.digest);
                    return Ok((names, image));
                }
                Ok(_) => {}
                Err(e) if by_manifest => return Err(damaged(e)),
                // Another image's damage is no reason to fail this lookup; if it was the
                // one asked for by config id, the lookup fails as not found below, and
                // its tag still names it for kiln rmi.
                Err(_) => {}
            }
        }
    }
    Err(not_found())
}

fn names_of(tags: &[(String, Descriptor)], digest: &Digest) -> Vec<String> {
    tags.iter()
        .filter(|(_, d)| d.digest == *digest)
        .map(|(n, _)| n.clone())
        .collect()
}

/// Every blob an image needs: manifest, config, layers.
pub fn image_blobs(image: &StoredImage) -> Vec<Digest> {
    let mut out = vec![
        image.manifest_descriptor.digest.clone(),
        image.manifest.config.digest.clone(),
    ];
    out.extend(image.manifest.layers.iter().map(|l| l.digest.clone()));
    out
}
