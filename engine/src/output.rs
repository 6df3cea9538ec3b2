//! Delivering a built image: the local store's tags, a registry push, archives and
//! filesystem exports — and the `--metadata-file` document that says what was made.

use std::collections::BTreeMap;

use kiln_exporter::archive::{self, ArchiveOptions};
use kiln_exporter::registry::{ImageRef, Registry, RegistryConfig};
use kiln_image::image::StoredImage;

use crate::error::EngineError;
use crate::request::{Destination, Entitlement, Output, OutputKind};

/// What the outputs did.
#[derive(Debug, Default, Clone)]
pub struct Delivered {
    /// Lines to tell the user (`Tagged app:latest`, `Pushed ...`, `Wrote ...`).
    pub lines: Vec<String>,
    /// Names the image got (store tags and pushed references).
    pub names: Vec<String>,
    /// The manifest digest of the last registry push, which may differ from the local
    /// one (compressed layers).
    pub pushed_digest: Option<String>,
}

/// The outputs of a request: none given means the local store.
pub(crate) fn effective(outputs: &[Output]) -> Vec<Output> {
    if outputs.is_empty() {
        vec![Output::new(OutputKind::Image)]
    } else {
        outputs.to_vec()
    }
}

fn archive_options(
    output: &Output,
    names: &[String],
    annotations: &BTreeMap<String, String>,
) -> ArchiveOptions {
    let mut annotations = annotations.clone();
    annotations.extend(output.annotations.clone());
    ArchiveOptions {
        compression: output.compression,
        force_compression: output.force_compression,
        oci_mediatypes: output
            .oci_mediatypes
            .unwrap_or(output.kind != OutputKind::Docker),
        names: names.to_vec(),
        annotations,
    }
}

/// Writes a file output to its destination (a path: through a temp file and a rename).
fn to_dest<T>(
    dest: &Destination,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<T, archive::ArchiveError>,
) -> Result<T, EngineError> {
    match dest {
        Destination::Stream(sink) => sink.with(|out| {
            let value = write(out)?;
            out.flush()
                .map_err(|e| EngineError::io("the output stream", e))?;
            Ok(value)
        }),
        Destination::Path(path) => Ok(archive::write_to_file(path, |file| write(file))?),
    }
}

fn shown(dest: &Destination) -> String {
    match dest {
        Destination::Path(path) => path.display().to_string(),
        Destination::Stream(_) => "-".to_owned(),
    }
}

/// Writes one archive or filesystem output; returns the line that says so.
fn write_file_output(
    store: &kiln_snapshotter::Store,
    image: &StoredImage,
    output: &Output,
    names: &[String],
    annotations: &BTreeMap<String, String>,
    allow: &[Entitlement],
) -> Result<String, EngineError> {
    let options = archive_options(output, names, annotations);
    let Some(dest) = &output.dest else {
        return Err(EngineError::invalid(
            format!("-o type={}: no destination", output.kind.name()),
            "give dest=PATH".to_owned(),
        ));
    };
    Ok(match (output.kind, dest) {
        (OutputKind::Oci, Destination::Path(path)) if !output.tar || path.is_dir() => {
            archive::write_oci_layout(store, image, &options, path)?;
            format!("Wrote the OCI layout {}", path.display())
        }
        (OutputKind::Oci, _) => {
            to_dest(dest, |out| {
                archive::write_oci_archive(store, image, &options, out)
            })?;
            format!("Wrote the OCI archive {}", shown(dest))
        }
        (OutputKind::Docker, _) => {
            to_dest(dest, |out| {
                archive::write_docker_archive(store, image, &options, out)
            })?;
            let shown = shown(dest);
            format!("Wrote the docker archive {shown} (docker load -i {shown})")
        }
        (OutputKind::Local, Destination::Path(path)) => {
            let options = archive::LocalOptions {
                merge: output.merge,
                devices: allow.contains(&Entitlement::ExportDevices),
                setuid: allow.contains(&Entitlement::ExportSetuid),
            };
            let report = archive::write_rootfs_dir(store, image, path, &options)?;
            local_output_line(path, &report)
        }
        (OutputKind::Tar, _) => {
            to_dest(dest, |out| archive::write_rootfs_tar(store, image, out))?;
            format!("Wrote the filesystem as a tar to {}", shown(dest))
        }
        (kind, _) => {
            return Err(EngineError::invalid(
                format!("-o type={}: no usable destination", kind.name()),
                "give dest=PATH".to_owned(),
            ));
        }
    })
}

/// Performs every output for `image`.
pub(crate) async fn deliver(
    store: &kiln_snapshotter::Store,
    registry: &RegistryConfig,
    image: &StoredImage,
    outputs: &[Output],
    tags: &[String],
    annotations: &BTreeMap<String, String>,
    allow: &[Entitlement],
) -> Result<Delivered, EngineError> {
    let mut done = Delivered::default();
    for output in outputs {
        let names = output.names.clone().unwrap_or_else(|| tags.to_vec());
        let pushes = output.kind == OutputKind::Registry
            || (output.kind == OutputKind::Image && output.push);
        match (output.kind, output.dest.as_ref()) {
            (OutputKind::Image, _) => {
                for name in &names {
                    store.tags().tag(name, image.manifest_descriptor.clone())?;
                    let name = kiln_snapshotter::normalize_name(name)?;
                    done.lines.push(format!("Tagged {name}"));
                    done.names.push(name);
                }
            }
            (OutputKind::Registry, _) => {}
            (_, Some(_)) => {
                let (store, image, output) = (store.clone(), image.clone(), output.clone());
                let names = names.clone();
                let annotations = annotations.clone();
                let allow = allow.to_vec();
                // Archives and trees are blocking I/O: off the async workers.
                let line = tokio::task::spawn_blocking(move || {
                    write_file_output(&store, &image, &output, &names, &annotations, &allow)
                })
                .await
                .map_err(|e| EngineError::io("the export task", std::io::Error::other(e)))??;
                done.lines.push(line);
            }
            (kind, _) => {
                return Err(EngineError::invalid(
                    format!("-o type={}: no usable destination", kind.name()),
                    "give dest=PATH".to_owned(),
                ));
            }
        }
        // After the local tags: the image is in the store even if the push fails.
        if pushes {
            push(
                store,
                registry,
                image,
                output,
                &names,
                annotations,
                &mut done,
            )
            .await?;
        }
    }
    Ok(done)
}

async fn push(
    store: &kiln_snapshotter::Store,
    registry: &RegistryConfig,
    image: &StoredImage,
    output: &Output,
    names: &[String],
    annotations: &BTreeMap<String, String>,
    done: &mut Delivered,
) -> Result<(), EngineError> {
    if names.is_empty() {
        return Err(EngineError::invalid(
            "nothing to push to",
            "give -t HOST/REPO:TAG (or -o type=registry,name=...)".to_owned(),
        ));
    }
    let mut targets = Vec::new();
    for name in names {
        targets.push(ImageRef::parse(name).map_err(|e| {
            EngineError::invalid(
                format!("{name} is not a registry reference: {e}"),
                "name the image HOST/REPO:TAG".to_owned(),
            )
        })?);
    }
    let options = archive_options(output, names, annotations);
    // The pushed image carries what was asked of it (media types, annotations); its
    // layers are compressed by the push itself.
    let image = if options.oci_mediatypes && options.annotations.is_empty() {
        image.clone()
    } else {
        let store = store.clone();
        let image = image.clone();
        let options = options.clone();
        tokio::task::spawn_blocking(move || {
            archive::export_image_for_output(&store, &image, &options)
        })
        .await
        .map_err(|e| EngineError::io("the export task", std::io::Error::other(e)))??
    };
    let mut config = registry.clone();
    if output.insecure {
        config
            .insecure_registries
            .extend(targets.iter().map(|t| t.registry().to_owned()));
    }
    let registry = Registry::new(config)?;
    let report =
        kiln_exporter::transfer::push(store, &registry, &image, &targets, options.compression)
            .await?;
    for reference in &report.references {
        done.lines.push(format!(
            "Pushed {reference} ({} blobs uploaded)",
            report.uploaded()
        ));
        done.names.push(reference.clone());
    }
    done.pushed_digest = Some(report.manifest_digest.to_string());
    Ok(())
}

/// `--metadata-file`: what buildx writes, for scripts that read it.
pub fn metadata(image: &StoredImage, delivered: &Delivered) -> serde_json::Value {
    let digest = delivered
        .pushed_digest
        .clone()
        .unwrap_or_else(|| image.manifest_descriptor.digest.to_string());
    serde_json::json!({
        "containerimage.digest": digest,
        "containerimage.config.digest": image.id.to_string(),
        "containerimage.descriptor": {
            "mediaType": image.manifest_descriptor.media_type,
            "digest": digest,
            "size": image.manifest_descriptor.size,
        },
        "image.name": delivered.names.join(","),
    })
}

/// What a `type=local` output says: where it wrote, each entry it did not write as the
/// image has it, and the `--allow` that would.
pub fn local_output_line(path: &std::path::Path, report: &archive::LocalReport) -> String {
    use kiln_snapshotter::layer_in::Change;
    let mut line = format!("Wrote the filesystem to {}", path.display());
    for changed in &report.changed {
        line.push_str(&format!("\nNot written as in the image: {changed}"));
    }
    let kinds = |device| {
        report
            .changed
            .iter()
            .any(|c| matches!(c.change, Change::DeviceSkipped { .. }) == device)
    };
    for (found, name) in [
        (kinds(true), "export.devices"),
        (kinds(false), "export.setuid"),
    ] {
        if found {
            line.push_str(&format!(
                "\n(--allow {name} writes them as the image has them)"
            ));
        }
    }
    line
}
