//! Images between the local store and a registry: push (layers compressed on the way
//! out, each compression made once per layer) and pull (blobs verified into the store,
//! then tagged). The registry protocol itself is in [`crate::registry`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use kiln_snapshotter::layer_out::Compression;
use kiln_snapshotter::{BlobWriter, Descriptor, Digest, Store, StoreError};

use crate::registry::{self, BlobSource, ImageRef, Platform, PushImage, PushReport, Registry};
use kiln_image::image::{Manifest, OCI_MANIFEST, StoredImage, read_image};

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] registry::Error),
}

/// A blob of the store to push, read through the store's verifying reader: a damaged
/// blob fails the upload with [`StoreError::Corrupt`]'s message (naming it) instead of
/// reaching the registry.
pub fn store_blob(
    store: &Store,
    media_type: &str,
    digest: &Digest,
    size: u64,
) -> Result<BlobSource, TransferError> {
    let content = store.content().clone();
    let blob = digest.clone();
    Ok(BlobSource {
        digest: digest.clone(),
        size,
        media_type: media_type.to_owned(),
        mount_from: Vec::new(),
        open: std::sync::Arc::new(move || {
            let reader = content.open(&blob).map_err(std::io::Error::other)?;
            Ok(Box::new(reader) as Box<dyn std::io::Read + Send>)
        }),
    })
}

/// Pushes `image` from the store under every name in `targets`, with its layers
/// compressed as `compression` asks (the registry gets gzip by default).
pub async fn push(
    store: &Store,
    registry: &Registry,
    image: &StoredImage,
    targets: &[ImageRef],
    compression: Compression,
) -> Result<PushReport, TransferError> {
    let mut blobs = Vec::new();
    let mut layers = Vec::new();
    for layer in &image.manifest.layers {
        let info = if layer.media_type.ends_with(".tar") && compression != Compression::None {
            let store = store.clone();
            let digest = layer.digest.clone();
            tokio::task::spawn_blocking(move || store.compressed_blob(&digest, compression))
                .await
                .map_err(|e| StoreError::Format {
                    path: "compression task".into(),
                    reason: e.to_string(),
                })??
        } else {
            kiln_snapshotter::layer_out::LayerInfo {
                digest: layer.digest.clone(),
                diff_id: layer.digest.clone(),
                size: layer.size,
                media_type: layer.media_type.clone(),
            }
        };
        blobs.push(store_blob(
            store,
            &info.media_type,
            &info.digest,
            info.size,
        )?);
        layers.push(Descriptor {
            media_type: info.media_type,
            digest: info.digest,
            size: info.size,
            annotations: BTreeMap::new(),
        });
    }
    let config = &image.manifest.config;
    blobs.push(store_blob(
        store,
        &config.media_type,
        &config.digest,
        config.size,
    )?);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        config: config.clone(),
        layers,
        annotations: image.manifest.annotations.clone(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| StoreError::Format {
        path: "manifest".into(),
        reason: e.to_string(),
    })?;
    let push = PushImage {
        manifest: manifest_bytes,
        manifest_media_type: OCI_MANIFEST.to_owned(),
        blobs,
    };
    Ok(registry.push_image(targets, &push).await?)
}

/// Writes into a [`BlobWriter`] from async code, refusing bytes past `limit`. The writes
/// block, briefly: they go to a local file through a large buffer.
struct BlockingSink<'a> {
    writer: &'a mut BlobWriter,
    limit: u64,
    written: u64,
}

impl tokio::io::AsyncWrite for BlockingSink<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.written + buf.len() as u64 > this.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {} bytes its manifest gives the blob",
                this.limit
            ))));
        }
        let n = std::io::Write::write(this.writer, buf);
        if let Ok(n) = n {
            this.written += n as u64;
        }
        Poll::Ready(n)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(std::io::Write::flush(self.get_mut().writer))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Streams blob `digest` of `reference`'s repository into the store through a
/// [`BlobWriter`]: more than `size` bytes, fewer, or other bytes than `digest` are refused,
/// and nothing becomes visible in the store unless the commit verifies it.
pub async fn pull_blob_into_store(
    store: &Store,
    registry: &Registry,
    reference: &ImageRef,
    digest: &Digest,
    size: u64,
) -> Result<(), TransferError> {
    let mut writer = store.content().writer()?;
    let mut sink = BlockingSink {
        writer: &mut writer,
        limit: size,
        written: 0,
    };
    let got = registry.pull_blob(reference, digest, &mut sink).await?;
    if got != size {
        return Err(TransferError::Registry(registry::Error::Registry {
            what: format!("blob {digest} of {reference}"),
            reason: format!("the registry sent {got} bytes, its manifest gives {size}"),
        }));
    }
    writer.commit(Some(digest))?;
    Ok(())
}

/// Pulls `reference` for `platform` into the store and tags it with `name`; blobs the
/// store has are not downloaded again.
pub async fn pull(
    store: &Store,
    registry: &Registry,
    reference: &ImageRef,
    platform: &Platform,
    name: &str,
) -> Result<StoredImage, TransferError> {
    let resolved = registry.resolve(reference, platform).await?;
    for (local, size, _media_type) in resolved.layers() {
        if store.content().exists(&local) {
            continue;
        }
        pull_blob_into_store(store, registry, reference, &local, size).await?;
    }
    let config_digest = store.content().write_bytes(&resolved.config)?;
    let manifest_digest = store.content().write_bytes(&resolved.manifest_bytes)?;
    if manifest_digest != resolved.manifest_digest || config_digest != resolved.config_digest {
        return Err(StoreError::DigestMismatch {
            expected: resolved.manifest_digest.clone(),
            actual: manifest_digest,
        }
        .into());
    }
    let descriptor = Descriptor {
        media_type: resolved.manifest_media_type.clone(),
        digest: manifest_digest,
        size: resolved.manifest_bytes.len() as u64,
        annotations: BTreeMap::new(),
    };
    store.tags().tag(name, descriptor.clone())?;
    Ok(read_image(store, &descriptor)?)
}
