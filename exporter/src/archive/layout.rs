//! OCI image layouts — a directory or a tar — and Docker archives (`docker load`'s tar:
//! the OCI layout plus `manifest.json`, as docker ≥ 25 and BuildKit write it).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kiln_snapshotter::{BlobReader, Descriptor, Digest, Store, StoreError};
use serde::{Deserialize, Serialize};

use super::{
    ArchiveError, ArchiveName, ArchiveOptions, IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION,
    SourceReader, append_file, archive_names, dest_err, export_image_for_output, missing,
    write_err, write_to_file,
};
use crate::registry::OCI_INDEX;
use kiln_image::image::StoredImage;

/// The `oci-layout` file.
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// `index.json`; fields kiln does not know are kept when it merges into an existing one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexFile {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<IndexEntry>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// An entry of `index.json`: read as JSON (so that fields such as `platform` survive a
/// merge), written by kiln as a descriptor (fields in the spec's order).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum IndexEntry {
    Read(serde_json::Value),
    Written(Descriptor),
}

impl IndexEntry {
    fn annotation(&self, key: &str) -> Option<&str> {
        match self {
            IndexEntry::Read(v) => v.get("annotations")?.get(key)?.as_str(),
            IndexEntry::Written(d) => d.annotations.get(key).map(String::as_str),
        }
    }

    fn digest(&self) -> Option<&str> {
        match self {
            IndexEntry::Read(v) => v.get("digest")?.as_str(),
            IndexEntry::Written(d) => Some(d.digest.as_str()),
        }
    }
}

impl IndexFile {
    fn new() -> IndexFile {
        IndexFile {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            other: BTreeMap::new(),
        }
    }

    /// Adds the image under each name, replacing entries of the same name (as buildx
    /// does in a layout directory); without names, adds it once.
    fn insert(&mut self, entries: Vec<Descriptor>) {
        for entry in entries {
            let name = entry
                .annotations
                .get(IMAGE_NAME_ANNOTATION)
                .map(String::as_str);
            let ref_name = entry
                .annotations
                .get(REF_NAME_ANNOTATION)
                .map(String::as_str);
            if ref_name.is_none() {
                let unnamed_copy = |m: &IndexEntry| {
                    m.digest() == Some(entry.digest.as_str())
                        && m.annotation(REF_NAME_ANNOTATION).is_none()
                };
                if self.manifests.iter().any(unnamed_copy) {
                    continue;
                }
            } else {
                self.manifests.retain(|m| {
                    m.annotation(IMAGE_NAME_ANNOTATION) != name
                        || m.annotation(REF_NAME_ANNOTATION) != ref_name
                });
            }
            self.manifests.push(IndexEntry::Written(entry));
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an index serialises")
    }
}

/// `index.json`'s entries for the image: one per name, each with the full name and the
/// ref name (containerd's and BuildKit's annotations), or one without names.
fn index_entries(image: &StoredImage, names: &[ArchiveName]) -> Vec<Descriptor> {
    if names.is_empty() {
        return vec![image.manifest_descriptor.clone()];
    }
    names
        .iter()
        .map(|name| {
            let mut entry = image.manifest_descriptor.clone();
            entry
                .annotations
                .insert(IMAGE_NAME_ANNOTATION.to_owned(), name.full.clone());
            entry
                .annotations
                .insert(REF_NAME_ANNOTATION.to_owned(), name.ref_name.clone());
            entry
        })
        .collect()
}

/// The image's blobs (manifest, config, layers), each once: digest -> size.
fn blobs(image: &StoredImage) -> BTreeMap<Digest, u64> {
    let mut out = BTreeMap::new();
    let descriptor = &image.manifest_descriptor;
    out.insert(descriptor.digest.clone(), descriptor.size);
    let config = &image.manifest.config;
    out.insert(config.digest.clone(), config.size);
    for layer in &image.manifest.layers {
        out.insert(layer.digest.clone(), layer.size);
    }
    out
}

fn blob_path(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// Opens a blob of the store to copy it out, checking its size; returns the reader
/// (a [`BlobReader`], which verifies the digest) and the blob's path.
fn open_blob(
    store: &Store,
    image: &StoredImage,
    digest: &Digest,
    size: u64,
) -> Result<(SourceReader<BlobReader>, PathBuf), ArchiveError> {
    let blob = store.content().open(digest).map_err(missing(image))?;
    let path = store.content().path(digest);
    if blob.len() != size {
        return Err(StoreError::Corrupt {
            digest: digest.clone(),
        }
        .into());
    }
    Ok((SourceReader::new(blob, false), path))
}

/// Checks that what was copied out of a blob is the blob: all of it, and its digest.
fn check_blob(
    reader: SourceReader<BlobReader>,
    digest: &Digest,
    size: u64,
) -> Result<(), ArchiveError> {
    if reader.count != size {
        return Err(StoreError::Corrupt {
            digest: digest.clone(),
        }
        .into());
    }
    reader.inner.finish()?;
    Ok(())
}

/// An entry of an archive.
enum Record {
    Dir,
    Bytes(Vec<u8>),
    Blob(Digest, u64),
}

/// The entries every layout archive has: `blobs/`, the blobs, `oci-layout`, `index.json`.
fn layout_records(image: &StoredImage, names: &[ArchiveName]) -> BTreeMap<String, Record> {
    let mut records = BTreeMap::new();
    records.insert("blobs/".to_owned(), Record::Dir);
    records.insert("blobs/sha256/".to_owned(), Record::Dir);
    for (digest, size) in blobs(image) {
        records.insert(blob_path(&digest), Record::Blob(digest, size));
    }
    records.insert("oci-layout".to_owned(), Record::Bytes(OCI_LAYOUT.to_vec()));
    let mut index = IndexFile::new();
    index.insert(index_entries(image, names));
    records.insert("index.json".to_owned(), Record::Bytes(index.to_bytes()));
    records
}

/// Writes `records` as a tar, in name order, every header with mtime 0 and uid/gid 0
/// (containerd's modes: directories 0755, blobs and `oci-layout` 0444, the rest 0644).
fn write_tar(
    store: &Store,
    image: &StoredImage,
    records: BTreeMap<String, Record>,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let mut builder = tar::Builder::new(out);
    let mut buf = Vec::new();
    for (name, record) in &records {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match record {
            Record::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, name, io::empty())
                    .map_err(write_err(name))?;
            }
            Record::Bytes(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if name == "oci-layout" { 0o444 } else { 0o644 });
                header.set_size(bytes.len() as u64);
                builder
                    .append_data(&mut header, name, bytes.as_slice())
                    .map_err(write_err(name))?;
            }
            Record::Blob(digest, size) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o444);
                header.set_size(*size);
                let (mut reader, path) = open_blob(store, image, digest, *size)?;
                append_file(
                    &mut builder,
                    &mut header,
                    Path::new(name),
                    name,
                    &mut reader,
                    &path,
                    &mut buf,
                )?;
                check_blob(reader, digest, *size)?;
            }
        }
    }
    builder
        .into_inner()
        .map_err(write_err("the end of the archive"))?
        .flush()
        .map_err(write_err("the end of the archive"))
}

/// `type=oci,dest=DIR`: writes the image into the OCI image layout at `dir` (created if
/// needed). Blobs already there are kept; `index.json` is merged: entries of the same
/// name are replaced, others kept. Every file appears complete or not at all, and
/// `index.json` is written last. Returns the image as exported.
pub fn write_oci_layout(
    store: &Store,
    image: &StoredImage,
    options: &ArchiveOptions,
    dir: &Path,
) -> Result<StoredImage, ArchiveError> {
    let names = archive_names(options)?;
    let index_path = dir.join("index.json");
    let mut index = match fs::read(&index_path) {
        Ok(bytes) => {
            serde_json::from_slice::<IndexFile>(&bytes).map_err(|e| ArchiveError::NotALayout {
                path: index_path.clone(),
                reason: format!("index.json is not an OCI image index: {e}"),
            })?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => IndexFile::new(),
        Err(source) => {
            return Err(ArchiveError::Dest {
                path: index_path,
                source,
            });
        }
    };
    let exported = export_image_for_output(store, image, options)?;
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).map_err(dest_err(&blob_dir))?;
    for (digest, size) in blobs(&exported) {
        let target = blob_dir.join(digest.hex());
        // Content-addressed: a file of the right size there is this blob.
        if fs::symlink_metadata(&target).is_ok_and(|m| m.is_file() && m.len() == size) {
            continue;
        }
        let entry = blob_path(&digest);
        write_to_file(&target, |out| {
            let (mut reader, path) = open_blob(store, image, &digest, size)?;
            io::copy(&mut reader, out).map_err(|e| reader.blame(&path, &entry, e))?;
            check_blob(reader, &digest, size)
        })?;
    }
    let layout = dir.join("oci-layout");
    write_to_file(&layout, |out| {
        out.write_all(OCI_LAYOUT).map_err(write_err("oci-layout"))
    })?;
    index.insert(index_entries(&exported, &names));
    write_to_file(&index_path, |out| {
        out.write_all(&index.to_bytes())
            .map_err(write_err("index.json"))
    })?;
    Ok(exported)
}

/// `type=oci,dest=FILE`: the OCI image layout of the image as a tar, streamed to `out`.
/// Its `index.json` names the image as BuildKit's does (`io.containerd.image.name` and
/// `org.opencontainers.image.ref.name` per name). Returns the image as exported.
pub fn write_oci_archive(
    store: &Store,
    image: &StoredImage,
    options: &ArchiveOptions,
    out: impl Write,
) -> Result<StoredImage, ArchiveError> {
    let names = archive_names(options)?;
    let exported = export_image_for_output(store, image, options)?;
    write_tar(store, image, layout_records(&exported, &names), out)?;
    Ok(exported)
}

/// One image of `manifest.json`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// `type=docker,dest=FILE`: a tar for `docker load`, streamed to `out`: `manifest.json`
/// (`Config`, `RepoTags`, `Layers` as paths into `blobs/sha256/`) beside the OCI layout,
/// as docker ≥ 25 writes. Media types are Docker's whatever `options.oci_mediatypes`
/// says, except with zstd, which only OCI media types can carry. Returns the image as
/// exported.
pub fn write_docker_archive(
    store: &Store,
    image: &StoredImage,
    options: &ArchiveOptions,
    out: impl Write,
) -> Result<StoredImage, ArchiveError> {
    let names = archive_names(options)?;
    let docker_options = ArchiveOptions {
        oci_mediatypes: false,
        ..options.clone()
    };
    let exported = export_image_for_output(store, image, &docker_options)?;
    let manifest = [DockerManifest {
        config: blob_path(&exported.manifest.config.digest),
        repo_tags: names.iter().filter_map(|n| n.repo_tag.clone()).collect(),
        layers: exported
            .manifest
            .layers
            .iter()
            .map(|l| blob_path(&l.digest))
            .collect(),
    }];
    let mut records = layout_records(&exported, &names);
    let manifest = serde_json::to_vec(&manifest).expect("manifest.json serialises");
    records.insert("manifest.json".to_owned(), Record::Bytes(manifest));
    write_tar(store, image, records, out)?;
    Ok(exported)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(hex: char, name: Option<&ArchiveName>) -> Descriptor {
        let mut d = Descriptor {
            media_type: kiln_image::image::OCI_MANIFEST.to_owned(),
            digest: Digest::parse(&format!("sha256:{}", hex.to_string().repeat(64)))
                .expect("digest"),
            size: 1,
            annotations: BTreeMap::new(),
        };
        if let Some(name) = name {
            d.annotations
                .insert(IMAGE_NAME_ANNOTATION.to_owned(), name.full.clone());
            d.annotations
                .insert(REF_NAME_ANNOTATION.to_owned(), name.ref_name.clone());
        }
        d
    }

    /// Merges `added` into the index `existing` and compares the result's JSON.
    fn check(existing: &str, added: Vec<Descriptor>, expected: &str) {
        let mut index: IndexFile = serde_json::from_str(existing).expect("index");
        index.insert(added);
        assert_eq!(
            String::from_utf8(index.to_bytes()).expect("utf-8"),
            expected
        );
    }

    #[test]
    fn index_merge_replaces_same_names_and_keeps_the_rest() {
        let v1 = super::super::archive_name("app:v1").expect("name");
        let a = "a".repeat(64);
        let existing = format!(
            r#"{{"schemaVersion":2,"manifests":[
                {{"mediaType":"m","digest":"sha256:{a}","size":9,"platform":{{"os":"linux"}},
                  "annotations":{{"org.opencontainers.image.ref.name":"other"}}}},
                {{"mediaType":"m","digest":"sha256:{a}","size":9,
                  "annotations":{{"io.containerd.image.name":"docker.io/library/app:v1",
                                  "org.opencontainers.image.ref.name":"v1"}}}}],
                "annotations":{{"x":"y"}}}}"#
        );
        let b = "b".repeat(64);
        check(
            &existing,
            vec![descriptor('b', Some(&v1))],
            &format!(
                concat!(
                    r#"{{"schemaVersion":2,"manifests":["#,
                    r#"{{"annotations":{{"org.opencontainers.image.ref.name":"other"}},"digest":"sha256:{a}","mediaType":"m","platform":{{"os":"linux"}},"size":9}},"#,
                    r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{b}","size":1,"#,
                    r#""annotations":{{"io.containerd.image.name":"docker.io/library/app:v1","org.opencontainers.image.ref.name":"v1"}}}}],"#,
                    r#""annotations":{{"x":"y"}}}}"#
                ),
                a = a,
                b = b
            ),
        );
        // Without a name, the same manifest is listed once (entries read back keep their
        // fields, in JSON object order).
        let once = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"sha256:{b}","mediaType":"application/vnd.oci.image.manifest.v1+json","size":1}}]}}"#
        );
        check(&once, vec![descriptor('b', None)], &once);
    }
}
