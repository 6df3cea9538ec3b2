//! `kiln build -o`: where a built image goes, in `docker buildx build` syntax —
//! `type=image` (the local store; the default), `type=registry` (`--push`), `type=oci`
//! (an archive, or a layout directory), `type=docker`, `type=local` and `type=tar` —
//! and the `--metadata-file` that says what was made.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kiln_exporter::archive::{self, ArchiveOptions};
use kiln_exporter::image::StoredImage;
use kiln_snapshotter::Store;
use kiln_snapshotter::layer_out::Compression;
use kiln_solver::request::OutputSpec;

/// What the outputs did, for the summary and `--metadata-file`.
#[derive(Debug, Default)]
pub(crate) struct Delivered {
    /// Lines to tell the user (`Tagged app:latest`, `Pushed ...`, `Wrote ...`).
    pub(crate) lines: Vec<String>,
    /// Names the image got (store tags and pushed references).
    pub(crate) names: Vec<String>,
    /// The manifest digest of the last registry push, which may differ from the local
    /// one (compressed layers).
    pub(crate) pushed_digest: Option<String>,
}

/// The outputs asked for: `-o` values, plus `--push`; none means the local store.
pub(crate) fn parse_outputs(values: &[String], push: bool) -> anyhow::Result<Vec<OutputSpec>> {
    let mut outputs: Vec<OutputSpec> = values
        .iter()
        .map(|v| OutputSpec::parse(v).map_err(anyhow::Error::from))
        .collect::<Result<_, _>>()?;
    if push {
        outputs.push(OutputSpec {
            kind: "registry".to_owned(),
            attrs: BTreeMap::new(),
        });
    }
    if outputs.is_empty() {
        outputs.push(OutputSpec {
            kind: "image".to_owned(),
            attrs: BTreeMap::new(),
        });
    }
    for output in &outputs {
        match output.kind.as_str() {
            "image" | "registry" | "oci" | "docker" | "local" | "tar" => {}
            other => bail!("-o type={other}: use image, registry, oci, docker, local or tar"),
        }
        if matches!(output.kind.as_str(), "oci" | "docker" | "local" | "tar")
            && !output.attrs.contains_key("dest")
        {
            bail!(
                "-o type={}: give dest=PATH (or dest=- for stdout)",
                output.kind
            );
        }
    }
    Ok(outputs)
}

fn flag(attrs: &BTreeMap<String, String>, key: &str, default: bool) -> anyhow::Result<bool> {
    match attrs.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true" | "1" | "") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => bail!("-o {key}={other}: use true or false"),
    }
}

fn archive_options(
    spec: &OutputSpec,
    names: &[String],
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<ArchiveOptions> {
    let compression = match spec.attrs.get("compression") {
        None => Compression::default_gzip(),
        Some(name) => crate::cmd::registry::parse_compression(name)?,
    };
    let compression = match (spec.attrs.get("compression-level"), compression) {
        (None, c) => c,
        (Some(level), Compression::Gzip { threads, .. }) => Compression::Gzip {
            level: level
                .parse()
                .with_context(|| format!("-o compression-level={level}: give 0 to 9"))?,
            threads,
        },
        (Some(level), Compression::Zstd { threads, .. }) => Compression::Zstd {
            level: level
                .parse()
                .with_context(|| format!("-o compression-level={level}: give 1 to 22"))?,
            threads,
        },
        (Some(_), c) => c,
    };
    let mut annotations = annotations.clone();
    for (key, value) in &spec.attrs {
        if let Some(name) = key.strip_prefix("annotation.") {
            annotations.insert(name.to_owned(), value.clone());
        }
    }
    Ok(ArchiveOptions {
        compression,
        force_compression: flag(&spec.attrs, "force-compression", false)?,
        oci_mediatypes: flag(&spec.attrs, "oci-mediatypes", spec.kind != "docker")?,
        names: names.to_vec(),
        annotations,
    })
}

/// The names an output applies to: its own `name=` (comma-separated) or the `-t` tags.
fn output_names(spec: &OutputSpec, tags: &[String]) -> Vec<String> {
    match spec.attrs.get("name") {
        Some(names) => names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
        None => tags.to_vec(),
    }
}

/// Writes a file output to `dest` (`-`: stdout) through `DEST.tmp` and a rename.
fn to_dest<T>(
    dest: &str,
    write: impl FnOnce(&mut dyn Write) -> Result<T, archive::ArchiveError>,
) -> anyhow::Result<T> {
    if dest == "-" {
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        let value = write(&mut lock)?;
        lock.flush()?;
        return Ok(value);
    }
    Ok(archive::write_to_file(Path::new(dest), |file| write(file))?)
}

/// Performs every output for `image`.
pub(crate) fn deliver(
    store: &Store,
    image: &StoredImage,
    outputs: &[OutputSpec],
    tags: &[String],
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<Delivered> {
    let mut done = Delivered::default();
    for spec in outputs {
        let names = output_names(spec, tags);
        match spec.kind.as_str() {
            "image" => {
                for name in &names {
                    store
                        .tags()
                        .tag(name, image.manifest_descriptor.clone())
                        .with_context(|| format!("tag the image as {name}"))?;
                    let name = kiln_snapshotter::normalize_name(name)?;
                    done.lines.push(format!("Tagged {name}"));
                    done.names.push(name);
                }
                if flag(&spec.attrs, "push", false)? {
                    push(store, image, spec, &names, annotations, &mut done)?;
                }
            }
            "registry" => push(store, image, spec, &names, annotations, &mut done)?,
            "oci" => {
                let options = archive_options(spec, &names, annotations)?;
                let dest = &spec.attrs["dest"];
                let as_dir = !flag(&spec.attrs, "tar", true)? || Path::new(dest).is_dir();
                if as_dir {
                    archive::write_oci_layout(store, image, &options, Path::new(dest))?;
                    done.lines.push(format!("Wrote the OCI layout {dest}"));
                } else {
                    to_dest(dest, |out| {
                        archive::write_oci_archive(store, image, &options, out)
                    })?;
                    done.lines.push(format!("Wrote the OCI archive {dest}"));
                }
            }
            "docker" => {
                let options = archive_options(spec, &names, annotations)?;
                let dest = &spec.attrs["dest"];
                to_dest(dest, |out| {
                    archive::write_docker_archive(store, image, &options, out)
                })?;
                done.lines.push(format!(
                    "Wrote the docker archive {dest} (docker load -i {dest})"
                ));
            }
            "local" => {
                let dest = PathBuf::from(&spec.attrs["dest"]);
                let options = archive::LocalOptions {
                    merge: flag(&spec.attrs, "merge", false)?,
                    ..archive::LocalOptions::default()
                };
                let report = archive::write_rootfs_dir(store, image, &dest, &options)?;
                for changed in &report.changed {
                    done.lines
                        .push(format!("Not written as in the image: {changed}"));
                }
                done.lines
                    .push(format!("Wrote the filesystem to {}", dest.display()));
            }
            "tar" => {
                let dest = &spec.attrs["dest"];
                to_dest(dest, |out| archive::write_rootfs_tar(store, image, out))?;
                done.lines
                    .push(format!("Wrote the filesystem as a tar to {dest}"));
            }
            other => bail!("-o type={other} is not supported"),
        }
    }
    Ok(done)
}

fn push(
    store: &Store,
    image: &StoredImage,
    spec: &OutputSpec,
    names: &[String],
    annotations: &BTreeMap<String, String>,
    done: &mut Delivered,
) -> anyhow::Result<()> {
    use kiln_exporter::registry::{ImageRef, Registry};
    if names.is_empty() {
        bail!("nothing to push to: give -t HOST/REPO:TAG (or -o type=registry,name=...)");
    }
    let targets = names
        .iter()
        .map(|n| ImageRef::parse(n).with_context(|| format!("{n} is not a registry reference")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = archive_options(spec, names, annotations)?;
    // The pushed image carries what was asked of it (media types, annotations); its
    // layers are compressed by the push itself.
    let image = if options.oci_mediatypes && options.annotations.is_empty() {
        image.clone()
    } else {
        archive::export_image_for_output(store, image, &options)?
    };
    let mut insecure = Vec::new();
    if flag(&spec.attrs, "registry.insecure", false)? {
        insecure.extend(targets.iter().map(|t| t.registry().to_owned()));
    }
    let config = crate::cmd::registry::registry_config(&insecure)?;
    let report = crate::cmd::registry::runtime()?.block_on(async {
        let registry = Registry::new(config)?;
        kiln_exporter::transfer::push(store, &registry, &image, &targets, options.compression).await
    })?;
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
pub(crate) fn write_metadata(
    path: &Path,
    image: &StoredImage,
    delivered: &Delivered,
) -> anyhow::Result<()> {
    let digest = delivered
        .pushed_digest
        .clone()
        .unwrap_or_else(|| image.manifest_descriptor.digest.to_string());
    let metadata = serde_json::json!({
        "containerimage.digest": digest,
        "containerimage.config.digest": image.id.to_string(),
        "containerimage.descriptor": {
            "mediaType": image.manifest_descriptor.media_type,
            "digest": digest,
            "size": image.manifest_descriptor.size,
        },
        "image.name": delivered.names.join(","),
    });
    let text = serde_json::to_string_pretty(&metadata)?;
    std::fs::write(path, text).with_context(|| format!("write --metadata-file {}", path.display()))
}
