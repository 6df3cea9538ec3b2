//! `kiln build` against BuildKit's semantics, one topic per directory of
//! `testdata/build/<topic>/`: a `Dockerfile`, an optional `context/`, and an
//! `expected.json` saying what BuildKit would produce from them:
//!
//! * `build_args` (object, optional), `target` (optional): passed to `kiln build`;
//! * `base` (optional): `{"dockerfile", "tag", "config"}`, an image built and tagged first
//!   from the same context (for Dockerfiles whose FROM names it), its config checked too;
//! * `config`: the image config's `config` object, compared exactly;
//! * `author` (optional): the top-level `author`;
//! * `history`: `created_by` and `empty_layer` of every history entry after the base
//!   image's own one (each must also carry BuildKit's comment `buildkit.dockerfile.v0`,
//!   and the entries with a layer must match the manifest's layers in number);
//! * `files`: path -> content, or `{"type": "file"|"dir"|"symlink", "content", "target",
//!   "mode": "0755", "uid", "gid", "mtime", "hardlink_of"}` (each key optional but
//!   `type`; `mtime` in seconds since the epoch, `hardlink_of` a path whose inode this
//!   one shares);
//! * `absent`: paths that must not exist;
//! * `platform` (optional): passed as `--platform`; `image` (optional): top-level keys of
//!   the image config (`architecture`, `os`, ...) compared exactly;
//! * `base_history_len` (optional, default 1): how many history entries the base image has
//!   (0 for a `FROM scratch` target);
//! * `secrets` (optional): `[{"id", "src"}]` (a file relative to the topic dir) or
//!   `[{"id", "env", "value"}]` (the variable set to the value for the build), passed as
//!   `--secret`;
//! * `ssh` (optional): ids, each given an (idle) agent socket with `--ssh ID=SOCKET`;
//! * `build_contexts` (optional): name -> value, passed as `--build-context NAME=VALUE`;
//! * `oci_layouts` (optional): dir -> `{"image", "tag"}`, an OCI layout written into the
//!   test's dir (after the `base` build) holding that image of the store under that tag;
//! * `http_serve` (optional): a topic subdirectory served over HTTP on 127.0.0.1 while the
//!   build runs; its URL is passed as `--build-arg HTTP_BASE=...`.
//!
//! Before expected.json is parsed, `@TOPIC_DIR@`, `@TEST_DIR@`, `@HOST_ARCH@` (amd64,
//! arm64, ...) and `@HTTP_BASE@` are replaced in its text.
//!
//! The image's filesystem is checked by extracting its layers, in manifest order, with the
//! `tar` crate (whiteouts applied), independently of kiln's own extraction code.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::build_features::HttpServer;
use crate::support::{Kiln, busybox_rootfs, describe, is_root, run};

/// The whole-history entry of the imported busybox base: the build's entries follow it
/// (`base_history_len` says otherwise).
const BASE_HISTORY_LEN: usize = 1;

fn topic_dir(topic: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/build")
        .join(topic)
}

/// Copies the topic's context into the test's dir with normalised modes (git keeps only the
/// executable bit): files 0644 or 0755, directories 0755, symlinks as they are.
fn copy_context(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the context dir");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if !from.is_dir() {
        return;
    }
    for entry in walkdir::WalkDir::new(from).min_depth(1) {
        let entry = entry.expect("walk the context");
        let rel = entry.path().strip_prefix(from).expect("prefix");
        let dest = to.join(rel);
        let meta = entry.path().symlink_metadata().expect("lstat");
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path()).expect("readlink");
            std::os::unix::fs::symlink(target, &dest).expect("symlink");
        } else if meta.is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
            let mode = if meta.mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }
}

/// Every entry of `expected["files"]` is in the tree at `fs_root` as it says; returns them.
pub(crate) fn check_files(
    fs_root: &Path,
    expected: &Value,
    failures: &mut Vec<String>,
) -> BTreeMap<String, Value> {
    let files: BTreeMap<String, Value> = expected
        .get("files")
        .and_then(Value::as_object)
        .map(|m| m.clone().into_iter().collect())
        .unwrap_or_default();
    for (path, want) in &files {
        check_file(fs_root, path, want, failures);
    }
    files
}

/// Every path of `expected["absent"]` is absent from the tree at `fs_root`.
pub(crate) fn check_absent(fs_root: &Path, expected: &Value, failures: &mut Vec<String>) {
    for path in expected
        .get("absent")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let path = path.as_str().expect("absent paths are strings");
        let full = fs_root.join(path.trim_start_matches('/'));
        if full.symlink_metadata().is_ok() {
            failures.push(format!(
                "{path}: expected to be absent; got {}",
                describe_path(&full)
            ));
        }
    }
}

/// `kiln inspect NAME`'s first (only) object.
pub(crate) fn inspect(k: &Kiln, name: &str) -> Value {
    let out = k.ok(&["inspect", name]);
    let all: Value = serde_json::from_str(&out).expect("inspect prints JSON");
    all.get(0).cloned().expect("inspect prints one image")
}

/// Runs `kiln build` on `dockerfile` with the topic's options, tagging the result `tag`:
/// `extra` are further arguments, `envs` variables set for the build.
fn build(
    k: &Kiln,
    context: &Path,
    dockerfile: &Path,
    tag: &str,
    expected: &Value,
    extra: &[String],
    envs: &[(String, String)],
) {
    let mut args: Vec<String> = vec![
        "build".into(),
        context.display().to_string(),
        "-f".into(),
        dockerfile.display().to_string(),
        "-t".into(),
        tag.into(),
        "--progress".into(),
        "plain".into(),
    ];
    if let Some(build_args) = expected.get("build_args").and_then(Value::as_object) {
        for (key, value) in build_args {
            args.push("--build-arg".into());
            args.push(format!(
                "{key}={}",
                value.as_str().expect("string build-arg")
            ));
        }
    }
    if let Some(target) = expected.get("target").and_then(Value::as_str) {
        args.push("--target".into());
        args.push(target.into());
    }
    if let Some(platform) = expected.get("platform").and_then(Value::as_str) {
        args.push("--platform".into());
        args.push(platform.into());
    }
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = k.cmd();
    cmd.args(&args);
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "{}", describe(&args, &out));
}

/// The `--secret`, `--ssh` and `--build-context` arguments and the variables the topic's
/// `secrets`, `ssh` and `build_contexts` ask for; the ssh agent sockets are bound (and
/// returned, to stay bound) in the test's dir.
fn topic_args(
    k: &Kiln,
    dir: &Path,
    expected: &Value,
) -> (
    Vec<String>,
    Vec<(String, String)>,
    Vec<std::os::unix::net::UnixListener>,
) {
    let mut args = Vec::new();
    let mut envs = Vec::new();
    let mut sockets = Vec::new();
    for secret in expected
        .get("secrets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let id = secret["id"].as_str().expect("secrets[].id");
        args.push("--secret".into());
        if let Some(src) = secret.get("src").and_then(Value::as_str) {
            args.push(format!("id={id},src={}", dir.join(src).display()));
        } else {
            let var = secret["env"].as_str().expect("secrets[].src or .env");
            let value = secret["value"].as_str().expect("secrets[].value with .env");
            args.push(format!("id={id},env={var}"));
            envs.push((var.to_owned(), value.to_owned()));
        }
    }
    for id in expected
        .get("ssh")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let id = id.as_str().expect("ssh ids are strings");
        let path = k.path(&format!("ssh-agent-{id}.sock"));
        sockets.push(std::os::unix::net::UnixListener::bind(&path).expect("bind an agent socket"));
        args.push("--ssh".into());
        args.push(format!("{id}={}", path.display()));
    }
    if let Some(contexts) = expected.get("build_contexts").and_then(Value::as_object) {
        for (name, value) in contexts {
            args.push("--build-context".into());
            args.push(format!(
                "{name}={}",
                value.as_str().expect("build_contexts values are strings")
            ));
        }
    }
    (args, envs, sockets)
}

/// Writes an OCI image layout at `dir` holding the store's image `image` (manifest, config
/// and layers, copied from the store's blobs) under the ref name `tag`.
fn write_oci_layout(k: &Kiln, image: &str, tag: &str, dir: &Path) {
    let store_blobs = k.root().join("content/blobs/sha256");
    let index: Value = serde_json::from_slice(
        &std::fs::read(k.root().join("content/index.json")).expect("read the store's index"),
    )
    .expect("the store's index is JSON");
    let descriptor = index["manifests"]
        .as_array()
        .expect("index manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == image)
        .unwrap_or_else(|| panic!("{image} is not in the store's index: {index}"))
        .clone();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("create the layout's blobs dir");
    let copy = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        std::fs::copy(store_blobs.join(hex), blobs.join(hex)).expect("copy a blob");
    };
    let manifest_digest = descriptor["digest"].as_str().expect("manifest digest");
    copy(manifest_digest);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&manifest_digest[7..])).expect("read"))
            .expect("the manifest is JSON");
    copy(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    );
    for layer in manifest["layers"].as_array().expect("layers") {
        copy(layer["digest"].as_str().expect("layer digest"));
    }
    let mut entry = descriptor.clone();
    entry["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": tag });
    let layout_index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec_pretty(&layout_index).expect("json"),
    )
    .expect("write index.json");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
}

/// The host's architecture as OCI names it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The image config's `config` object, `{}` when absent.
fn container_config(image: &Value) -> Value {
    image["Config"]
        .get("config")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()))
}

pub(crate) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("json")
}

fn remove_any(path: &Path) {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).expect("remove a directory"),
        Ok(_) => std::fs::remove_file(path).expect("remove a file"),
        Err(_) => {}
    }
}

/// Applies one layer tar onto `root`: `.wh.NAME` deletes NAME, `.wh..wh..opq` empties the
/// directory of what lower layers put there, anything else replaces what is in its way.
fn apply_layer(blob: &Path, root: &Path) {
    let file = std::fs::File::open(blob)
        .unwrap_or_else(|e| panic!("open the layer blob {}: {e}", blob.display()));
    let reader = kiln_snapshotter::layer_in::decompress(file).expect("decompress a layer");
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    let mut written: HashSet<PathBuf> = HashSet::new();
    // Directory mtimes are set once everything is in them, as tar's own unpack does.
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    for entry in archive.entries().expect("read the layer") {
        let mut entry = entry.expect("a layer entry");
        let raw = entry.path().expect("an entry path").into_owned();
        let rel: PathBuf = raw
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root directory itself
        };
        let parent = root.join(rel.parent().unwrap_or(Path::new("")));
        if name == ".wh..wh..opq" {
            if let Ok(children) = std::fs::read_dir(&parent) {
                for child in children.flatten() {
                    if !written.contains(&child.path()) {
                        remove_any(&child.path());
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            remove_any(&parent.join(hidden));
            continue;
        }
        let dest = root.join(&rel);
        if let Ok(existing) = dest.symlink_metadata()
            && !(existing.is_dir() && entry.header().entry_type().is_dir())
        {
            remove_any(&dest);
        }
        if entry.header().entry_type().is_dir()
            && let Ok(mtime) = entry.header().mtime()
        {
            dir_times.push((dest.clone(), mtime));
        }
        entry
            .unpack_in(root)
            .unwrap_or_else(|e| panic!("extract {}: {e}", raw.display()));
        written.insert(dest);
    }
    for (dir, mtime) in dir_times.iter().rev() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(*mtime);
        if let Ok(handle) = std::fs::File::open(dir) {
            let _ = handle.set_modified(time);
        }
    }
}

/// Extracts every layer of `image` (an inspect object) from the store into `root`.
pub(crate) fn extract(k: &Kiln, image: &Value, root: &Path) {
    std::fs::create_dir_all(root).expect("create the extraction dir");
    let layers = image["Manifest"]["layers"]
        .as_array()
        .expect("the manifest lists layers");
    for layer in layers {
        let digest = layer["digest"].as_str().expect("a layer digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        apply_layer(&k.root().join("content/blobs/sha256").join(hex), root);
    }
}

/// What is at `path`, described like the `files` entries.
pub(crate) fn describe_path(path: &Path) -> String {
    match path.symlink_metadata() {
        Err(_) => "nothing".to_owned(),
        Ok(m) => {
            let kind = if m.file_type().is_symlink() {
                format!(
                    "symlink -> {}",
                    std::fs::read_link(path).expect("readlink").display()
                )
            } else if m.is_dir() {
                "dir".to_owned()
            } else if m.is_file() {
                format!(
                    "file {:?}",
                    String::from_utf8_lossy(&std::fs::read(path).expect("read"))
                )
            } else {
                "special file".to_owned()
            };
            format!(
                "{kind} mode {:04o} uid {} gid {}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            )
        }
    }
}

/// Checks one `files` entry, appending any difference to `failures`.
pub(crate) fn check_file(root: &Path, path: &str, want: &Value, failures: &mut Vec<String>) {
    let full = root.join(path.trim_start_matches('/'));
    let got = describe_path(&full);
    let mut fail = |what: String| failures.push(format!("{path}: {what}; got {got}"));
    let Ok(meta) = full.symlink_metadata() else {
        fail(format!("expected {want}"));
        return;
    };
    let spec = match want {
        Value::String(content) => {
            let mut spec = Map::new();
            spec.insert("type".into(), "file".into());
            spec.insert("content".into(), content.clone().into());
            spec
        }
        Value::Object(spec) => spec.clone(),
        other => panic!("{path}: a files entry is a string or an object, not {other}"),
    };
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("file");
    let type_ok = match kind {
        "file" => meta.is_file(),
        "dir" => meta.is_dir(),
        "symlink" => meta.file_type().is_symlink(),
        other => panic!("{path}: unknown type {other:?}"),
    };
    if !type_ok {
        fail(format!("expected a {kind}"));
        return;
    }
    if let Some(content) = spec.get("content").and_then(Value::as_str) {
        let bytes = std::fs::read(&full).expect("read");
        if bytes != content.as_bytes() {
            fail(format!("expected content {content:?}"));
        }
    }
    if let Some(target) = spec.get("target").and_then(Value::as_str) {
        let link = std::fs::read_link(&full).expect("readlink");
        if link != Path::new(target) {
            fail(format!("expected symlink target {target:?}"));
        }
    }
    if let Some(mode) = spec.get("mode").and_then(Value::as_str) {
        let mode = u32::from_str_radix(mode, 8).expect("an octal mode");
        if meta.mode() & 0o7777 != mode {
            fail(format!("expected mode {mode:04o}"));
        }
    }
    if let Some(uid) = spec.get("uid").and_then(Value::as_u64)
        && u64::from(meta.uid()) != uid
    {
        fail(format!("expected uid {uid}"));
    }
    if let Some(gid) = spec.get("gid").and_then(Value::as_u64)
        && u64::from(meta.gid()) != gid
    {
        fail(format!("expected gid {gid}"));
    }
    // The tar crate writes an mtime of 0 as 1 when it extracts (its entry.rs), so 0 is
    // checked as 1.
    if let Some(mtime) = spec.get("mtime").and_then(Value::as_i64).map(|m| m.max(1))
        && meta.mtime() != mtime
    {
        fail(format!("expected mtime {mtime}, not {}", meta.mtime()));
    }
    if let Some(other) = spec.get("hardlink_of").and_then(Value::as_str) {
        let other_meta = root.join(other.trim_start_matches('/')).symlink_metadata();
        if !other_meta.is_ok_and(|o| o.dev() == meta.dev() && o.ino() == meta.ino()) {
            fail(format!("expected a hard link of {other}"));
        }
    }
}

/// `created_by`/`empty_layer` of the history entries after the base's `base_len`.
fn new_history(image: &Value, base_len: usize) -> Vec<Value> {
    let history = image["Config"]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    history
        .iter()
        .skip(base_len)
        .map(|h| {
            serde_json::json!({
                "created_by": h.get("created_by").cloned().unwrap_or(Value::from("")),
                "empty_layer": h.get("empty_layer").cloned().unwrap_or(Value::from(false)),
            })
        })
        .collect()
}

fn run_topic(topic: &str) {
    if !is_root(&format!("build_topics::{topic}")) {
        return;
    }
    let dir = topic_dir(topic);
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("read expected.json");
    let raw: Value = serde_json::from_str(&text).expect("expected.json is JSON");

    let k = Kiln::new();
    let Some(rootfs) = busybox_rootfs(&k.path("rootfs")) else {
        return;
    };
    k.ok(&["import", rootfs.to_str().expect("utf8"), "busybox:latest"]);
    let context = k.path("context");
    copy_context(&dir.join("context"), &context);

    let server = raw
        .get("http_serve")
        .and_then(Value::as_str)
        .map(|served| HttpServer::start(&dir.join(served)));
    if raw.get("http_serve").is_some() && server.as_ref().is_some_and(Option::is_none) {
        return; // no python3: skipped, the reason printed
    }
    let http_base = server
        .as_ref()
        .and_then(Option::as_ref)
        .map(HttpServer::base)
        .unwrap_or_default();
    let topic_path = dir.canonicalize().expect("canonical topic dir");
    let text = text
        .replace("@TOPIC_DIR@", &topic_path.display().to_string())
        .replace("@TEST_DIR@", &k.dir.path().display().to_string())
        .replace("@HOST_ARCH@", host_arch())
        .replace("@HTTP_BASE@", &http_base);
    let expected: Value = serde_json::from_str(&text).expect("expected.json is JSON");
    let base_len = expected
        .get("base_history_len")
        .and_then(Value::as_u64)
        .map_or(BASE_HISTORY_LEN, |n| n as usize);

    let mut failures: Vec<String> = Vec::new();

    if let Some(base) = expected.get("base") {
        let dockerfile = base["dockerfile"].as_str().expect("base.dockerfile");
        let tag = base["tag"].as_str().expect("base.tag");
        build(
            &k,
            &context,
            &dir.join(dockerfile),
            tag,
            &Value::Null,
            &[],
            &[],
        );
        if let Some(want) = base.get("config") {
            let got = container_config(&inspect(&k, tag));
            if &got != want {
                failures.push(format!(
                    "base image {tag}: config differs\n--- expected\n{}\n--- got\n{}",
                    pretty(want),
                    pretty(&got)
                ));
            }
        }
    }
    if let Some(layouts) = expected.get("oci_layouts").and_then(Value::as_object) {
        for (name, layout) in layouts {
            write_oci_layout(
                &k,
                layout["image"].as_str().expect("oci_layouts[].image"),
                layout["tag"].as_str().expect("oci_layouts[].tag"),
                &k.path(name),
            );
        }
    }

    let (mut extra, envs, _sockets) = topic_args(&k, &dir, &expected);
    if !http_base.is_empty() {
        extra.push("--build-arg".into());
        extra.push(format!("HTTP_BASE={http_base}"));
    }
    let tag = format!("topic-{}:latest", topic.replace('_', "-"));
    build(
        &k,
        &context,
        &dir.join("Dockerfile"),
        &tag,
        &expected,
        &extra,
        &envs,
    );
    drop(server);
    let image = inspect(&k, &tag);

    if let Some(want) = expected.get("image").and_then(Value::as_object) {
        for (key, value) in want {
            let got = image["Config"].get(key).cloned().unwrap_or(Value::Null);
            if &got != value {
                failures.push(format!("image config {key:?}: expected {value}, got {got}"));
            }
        }
    }

    let got = container_config(&image);
    if got != expected["config"] {
        failures.push(format!(
            "config differs\n--- expected\n{}\n--- got\n{}",
            pretty(&expected["config"]),
            pretty(&got)
        ));
    }

    if let Some(author) = expected.get("author") {
        let got = image["Config"]
            .get("author")
            .cloned()
            .unwrap_or(Value::Null);
        if &got != author {
            failures.push(format!("author: expected {author}, got {got}"));
        }
    }

    let want_history = expected["history"].as_array().cloned().unwrap_or_default();
    let got_history = new_history(&image, base_len);
    if got_history != want_history {
        let mut diff = String::new();
        for i in 0..want_history.len().max(got_history.len()) {
            let w = want_history.get(i).map(Value::to_string);
            let g = got_history.get(i).map(Value::to_string);
            if w != g {
                let _ = writeln!(
                    diff,
                    "  [{i}] expected {}\n      got      {}",
                    w.unwrap_or_else(|| "(none)".into()),
                    g.unwrap_or_else(|| "(none)".into())
                );
            }
        }
        failures.push(format!(
            "history differs (entries after the base's):\n{diff}"
        ));
    }

    // BuildKit's frontend writes this comment on every entry it adds.
    for (i, entry) in image["Config"]["history"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .skip(base_len)
    {
        let comment = entry.get("comment").and_then(Value::as_str).unwrap_or("");
        if comment != "buildkit.dockerfile.v0" {
            failures.push(format!(
                "history[{i}] ({}): comment {comment:?}, expected \"buildkit.dockerfile.v0\"",
                entry["created_by"]
            ));
        }
    }

    // Every history entry with a layer has one, and nothing else does.
    let all_history = image["Config"]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let with_layers = all_history
        .iter()
        .filter(|h| {
            !h.get("empty_layer")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .count();
    let layers = image["Manifest"]["layers"].as_array().map_or(0, Vec::len);
    let diff_ids = image["Config"]["rootfs"]["diff_ids"]
        .as_array()
        .map_or(0, Vec::len);
    if layers != with_layers || diff_ids != layers {
        failures.push(format!(
            "layers: {with_layers} history entries have a layer, the manifest lists {layers} \
             layers and rootfs {diff_ids} diff_ids"
        ));
    }

    let fs_root = k.path("image-fs");
    extract(&k, &image, &fs_root);
    check_files(&fs_root, &expected, &mut failures);
    check_absent(&fs_root, &expected, &mut failures);

    assert!(
        failures.is_empty(),
        "topic {topic}: {} difference(s) from BuildKit:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

macro_rules! topics {
    ($($topic:ident),* $(,)?) => {
        $(
            #[test]
            fn $topic() {
                run_topic(stringify!($topic));
            }
        )*
    };
}

topics!(
    env_arg,
    workdir,
    user,
    copy,
    multistage,
    cmd_entrypoint,
    cmd_entrypoint_keep,
    metadata,
    onbuild,
    run_mounts,
    heredocs,
    copy_flags,
    add_archives,
    named_contexts,
    platform_cross,
    cache_mount_identity,
    dockerignore_walk,
    workdir_slash,
    copy_chown_lookup,
    copy_globs,
    add_archive_entries,
);

/// Every topic directory has a test above.
#[test]
fn every_topic_directory_has_a_test() {
    let known = [
        "env_arg",
        "workdir",
        "user",
        "copy",
        "multistage",
        "cmd_entrypoint",
        "cmd_entrypoint_keep",
        "metadata",
        "onbuild",
        "run_mounts",
        "heredocs",
        "copy_flags",
        "add_archives",
        "named_contexts",
        "platform_cross",
        "cache_mount_identity",
        "dockerignore_walk",
        "workdir_slash",
        "copy_chown_lookup",
        "copy_globs",
        "add_archive_entries",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/build");
    for entry in std::fs::read_dir(&root).expect("read testdata/build") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            known.contains(&name.as_str()),
            "testdata/build/{name} has no test in build_topics.rs"
        );
        assert!(
            entry.path().join("expected.json").is_file(),
            "testdata/build/{name} has no expected.json"
        );
    }
}

/// COPY sources that BuildKit refuses, and its words for each (kiln adds the Dockerfile
/// line and a hint): a literal source missing from the context or from a stage fails
/// computing the cache key (`cache/contenthash/checksum.go`: `"/path": not found`); a
/// wildcard whose literal directory part is missing fails in fsutil's walk with its
/// `lstat` error; a malformed pattern is Go's `syntax error in pattern`; a backslash makes
/// the next wildcard character literal, so `\[x\].txt` is a plain name, backslashes kept.
#[test]
fn copy_source_errors() {
    if !is_root("build_topics::copy_source_errors") {
        return;
    }
    let k = Kiln::new();
    let Some(rootfs) = busybox_rootfs(&k.path("rootfs")) else {
        return;
    };
    k.ok(&["import", rootfs.to_str().expect("utf8"), "busybox:latest"]);
    k.write("ctx/[x].txt", "x");
    k.write("ctx/d/a.txt", "a");
    let cases: &[(&str, &[&str])] = &[
        (
            "FROM busybox:latest\nCOPY nosuch /x\n",
            &[
                "failed to compute cache key",
                "\"/nosuch\": not found",
                ":2:1",
                "hint:",
            ],
        ),
        (
            "FROM busybox:latest AS s\nFROM busybox:latest\nCOPY --from=s /nosuch /x\n",
            &[
                "\"/nosuch\": not found",
                ":3:1",
                "hint: COPY --from reads that stage's",
            ],
        ),
        (
            "FROM busybox:latest\nCOPY nodir/*.txt /x/\n",
            &["lstat /nodir: no such file or directory", ":2:1", "hint:"],
        ),
        (
            "FROM busybox:latest AS s\nFROM busybox:latest\nCOPY --from=s /nodir/* /x/\n",
            &["lstat /nodir: no such file or directory", ":3:1"],
        ),
        (
            "FROM busybox:latest\nCOPY d/[a /x/\n",
            &["syntax error in pattern", ":2:1", "hint:"],
        ),
        (
            "FROM busybox:latest\nCOPY '\\[x\\].txt' /x/\n",
            &["\"/\\\\[x\\\\].txt\": not found", ":2:1"],
        ),
    ];
    for (i, (dockerfile, wants)) in cases.iter().enumerate() {
        let path = format!("ctx/Dockerfile.{i}");
        k.write(&path, dockerfile);
        let out = run(k
            .cmd()
            .args(["build", "--progress=plain", "-f", &path, "ctx"]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{dockerfile}\n{err}");
        for want in *wants {
            assert!(err.contains(want), "{dockerfile}\nwant {want:?} in\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}
