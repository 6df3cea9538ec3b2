//! `kiln build` features of issue 6, end to end through the binary: secrets never reach the
//! image or the store, cache mounts persist across builds outside the image, `COPY --link`
//! survives a base change in the cache, ADD extracts archives exactly as `tar -x` does and
//! hostile archives or context symlinks cannot reach outside their destination, heredoc
//! quoting, `ADD --checksum`, required secrets, foreign platforms, RUN networks and
//! `# syntax=`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::build_topics::{extract, inspect};
use crate::support::{Kiln, busybox_rootfs, describe, describe_tree, is_root, run};

/// `python3 -m http.server` serving a directory on 127.0.0.1 and a free port, stopped (by
/// its process id) when dropped.
pub(crate) struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    /// Starts the server and waits until it accepts connections; None (with the reason
    /// printed) when python3 is not installed.
    pub(crate) fn start(dir: &Path) -> Option<HttpServer> {
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("find a free port")
                .port();
            let child = Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .arg("--directory")
                .arg(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(e) => {
                    eprintln!("skipped: python3 could not be started ({e}); it serves ADD URLs");
                    return None;
                }
            };
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(HttpServer { child, port });
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("python3 -m http.server did not start on 127.0.0.1");
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test world with `busybox:latest` imported; None (skipped) when not root.
fn world(test: &str) -> Option<Kiln> {
    if !is_root(&format!("build_features::{test}")) {
        return None;
    }
    let k = Kiln::new();
    let rootfs = busybox_rootfs(&k.path("rootfs"))?;
    k.ok(&["import", rootfs.to_str().expect("utf8"), "busybox:latest"]);
    Some(k)
}

/// `kiln build --progress=rawjson ARGS` with `envs` set: its output and its events.
fn build_json(k: &Kiln, args: &[&str], envs: &[(&str, &str)]) -> (Output, Vec<Value>) {
    let mut all = vec!["build", "--progress=rawjson"];
    all.extend_from_slice(args);
    let mut cmd = k.cmd();
    cmd.args(&all);
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let out = run(&mut cmd);
    let events = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (out, events)
}

fn ok_build(k: &Kiln, args: &[&str]) -> Vec<Value> {
    let (out, events) = build_json(k, args, &[]);
    assert!(out.status.success(), "{}", describe(args, &out));
    events
}

/// `kiln build --progress=plain ARGS`, expected to fail: its stderr.
fn failed_build(k: &Kiln, args: &[&str]) -> String {
    let mut all = vec!["build", "--progress=plain"];
    all.extend_from_slice(args);
    let out = run(k.cmd().args(&all));
    assert!(
        !out.status.success(),
        "expected the build to fail\n{}",
        describe(&all, &out)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Labels of the events of one type.
fn labels(events: &[Value], kind: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["label"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The filesystem of image `name`, extracted with the tar crate (independent of kiln).
fn tree(k: &Kiln, name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    extract(k, &inspect(k, name), &dir.path().join("fs"));
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::support::describe::sha256_hex(bytes)
}

// (a) -------------------------------------------------------------------------------------

const FILE_SECRET: &str = "kiln-file-secret-5c0ffee7a1d94b3e";
const ENV_SECRET: &str = "kiln-env-secret-0ddba11c7e5a2f68";

#[test]
fn secrets_are_in_no_layer_config_history_or_store_file() {
    let Some(k) = world("secrets_are_in_no_layer_config_history_or_store_file") else {
        return;
    };
    let token = k.write("token.txt", FILE_SECRET);
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\n\
         RUN --mount=type=secret,id=filetok sha256sum /run/secrets/filetok | cut -c1-64 > /file-hash\n\
         RUN --mount=type=secret,id=envtok,env=TOKEN printf %s \"$TOKEN\" | sha256sum | cut -c1-64 > /env-hash\n\
         RUN --mount=type=secret,id=filetok,target=/etc/app-token cp /etc/app-token /tmp/copy && rm /tmp/copy && echo used > /used\n\
         RUN --mount=type=secret,id=envtok,env=TOKEN,target=/root/tok test -s /root/tok && test -n \"$TOKEN\" && echo both > /both\n",
    );
    let file_arg = format!("id=filetok,src={}", token.display());
    let args = [
        "ctx",
        "-t",
        "with-secrets",
        "--secret",
        &file_arg,
        "--secret",
        "id=envtok,env=KILN_FEATURE_TOKEN",
    ];
    let (out, _events) = build_json(&k, &args, &[("KILN_FEATURE_TOKEN", ENV_SECRET)]);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let progress = String::from_utf8_lossy(&out.stderr);

    // The steps did read the secrets.
    let fs = tree(&k, "with-secrets");
    let root = fs.path().join("fs");
    assert_eq!(
        read(&root.join("file-hash")).trim(),
        sha256_hex(FILE_SECRET.as_bytes()),
        "the RUN did not see the file secret"
    );
    assert_eq!(
        read(&root.join("env-hash")).trim(),
        sha256_hex(ENV_SECRET.as_bytes()),
        "the RUN did not see the env secret"
    );
    assert_eq!(read(&root.join("used")), "used\n");
    assert_eq!(read(&root.join("both")), "both\n");
    for gone in ["run", "etc/app-token", "root/tok", "tmp/copy"] {
        assert!(
            root.join(gone).symlink_metadata().is_err(),
            "/{gone} is in the image"
        );
    }

    let mut leaks = Vec::new();
    let secrets = [("file", FILE_SECRET), ("env", ENV_SECRET)];
    // Every blob, raw and decompressed.
    let blobs = k.root().join("content/blobs/sha256");
    for entry in std::fs::read_dir(&blobs).expect("read the blobs") {
        let path = entry.expect("a blob").path();
        let raw = std::fs::read(&path).expect("read a blob");
        let mut plain = Vec::new();
        if let Ok(mut reader) =
            kiln_snapshotter::layer_in::decompress(std::fs::File::open(&path).expect("open"))
        {
            let _ = reader.read_to_end(&mut plain);
        }
        for (what, secret) in secrets {
            if contains(&raw, secret.as_bytes()) || contains(&plain, secret.as_bytes()) {
                leaks.push(format!("the {what} secret is in blob {}", path.display()));
            }
        }
    }
    // The config and its history, as kiln shows them.
    let image = inspect(&k, "with-secrets");
    let config = serde_json::to_string(&image["Config"]).expect("json");
    for (what, secret) in secrets {
        if config.contains(secret) {
            leaks.push(format!("the {what} secret is in the config: {config}"));
        }
        for entry in image["Config"]["history"].as_array().expect("history") {
            if entry.to_string().contains(secret) {
                leaks.push(format!("the {what} secret is in history entry {entry}"));
            }
        }
        if progress.contains(secret) {
            leaks.push(format!("the {what} secret is in the progress output"));
        }
    }
    // Nothing the build left in the store holds them either (snapshots, temp files, logs).
    for entry in walkdir::WalkDir::new(k.root()) {
        let entry = entry.expect("walk the store");
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        for (what, secret) in secrets {
            if contains(&bytes, secret.as_bytes()) {
                leaks.push(format!(
                    "the {what} secret is in the store file {}",
                    entry.path().display()
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

// (b) -------------------------------------------------------------------------------------

const CACHE_DOCKERFILE: &str = "FROM busybox\n\
RUN --mount=type=cache,id=persist,target=/var/cache/build ls /var/cache/build > /seen && echo run >> /var/cache/build/log && cp /var/cache/build/log /log\n";

/// The paths in one layer blob, without `./` and trailing slashes.
fn layer_entries(k: &Kiln, digest: &str) -> Vec<String> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let file =
        std::fs::File::open(k.root().join("content/blobs/sha256").join(hex)).expect("open a layer");
    let reader = kiln_snapshotter::layer_in::decompress(file).expect("decompress");
    let mut archive = tar::Archive::new(reader);
    let mut paths = Vec::new();
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("an entry");
        let path = entry.path().expect("path").display().to_string();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        if !path.is_empty() && path != "." {
            paths.push(path);
        }
    }
    paths
}

/// Paths of every entry in the image's layer tars.
fn layer_paths(k: &Kiln, name: &str) -> Vec<String> {
    let image = inspect(k, name);
    image["Manifest"]["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .flat_map(|layer| layer_entries(k, layer["digest"].as_str().expect("digest")))
        .collect()
}

#[test]
fn a_cache_mount_persists_across_builds_and_stays_out_of_the_image() {
    let Some(k) = world("a_cache_mount_persists_across_builds_and_stays_out_of_the_image") else {
        return;
    };
    k.write("ctx/Dockerfile", CACHE_DOCKERFILE);
    ok_build(&k, &["ctx", "-t", "first"]);
    let events = ok_build(&k, &["ctx", "-t", "second", "--no-cache"]);
    assert!(
        labels(&events, "started")
            .iter()
            .any(|l| l.contains("ls /var/cache/build")),
        "the RUN did not run again with --no-cache: {events:?}"
    );

    let first = tree(&k, "first");
    let second = tree(&k, "second");
    let (first, second) = (first.path().join("fs"), second.path().join("fs"));
    assert_eq!(
        read(&first.join("seen")),
        "",
        "the first build's cache was not empty"
    );
    assert_eq!(read(&first.join("log")), "run\n");
    assert_eq!(
        read(&second.join("seen")),
        "log\n",
        "the second build did not see the first build's file in the cache"
    );
    assert_eq!(read(&second.join("log")), "run\nrun\n");

    for (name, root) in [("first", &first), ("second", &second)] {
        assert!(
            root.join("var").symlink_metadata().is_err(),
            "{name}: the cache mount's target /var is in the image"
        );
        let in_layers: Vec<String> = layer_paths(&k, name)
            .into_iter()
            .filter(|p| p.trim_start_matches("./").starts_with("var"))
            .collect();
        assert!(
            in_layers.is_empty(),
            "{name}: the layers hold cache paths: {in_layers:?}"
        );
    }

    // The cache lives in the store's cache-mounts/.
    let logs: Vec<PathBuf> = walkdir::WalkDir::new(k.root().join("cache-mounts"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.file_name() == "log")
        .map(|e| e.into_path())
        .collect();
    assert_eq!(
        logs.len(),
        1,
        "expected one cache file `log` under cache-mounts/: {logs:?}"
    );
    assert_eq!(read(&logs[0]), "run\nrun\n");
}

/// `--build-arg BUILDKIT_CACHE_MOUNT_NS=NS` puts every cache mount id of the build in NS, as
/// BuildKit's frontend does: builds in other namespaces do not see each other's caches.
#[test]
fn the_cache_mount_namespace_separates_caches() {
    let Some(k) = world("the_cache_mount_namespace_separates_caches") else {
        return;
    };
    k.write("ctx/Dockerfile", CACHE_DOCKERFILE);
    let ns = |name: &str| format!("BUILDKIT_CACHE_MOUNT_NS={name}");
    ok_build(&k, &["ctx", "-t", "a1", "--build-arg", &ns("a")]);
    ok_build(
        &k,
        &["ctx", "-t", "b1", "--no-cache", "--build-arg", &ns("b")],
    );
    ok_build(
        &k,
        &["ctx", "-t", "a2", "--no-cache", "--build-arg", &ns("a")],
    );
    ok_build(&k, &["ctx", "-t", "none", "--no-cache"]);
    let seen = |name: &str| read(&tree(&k, name).path().join("fs/log"));
    assert_eq!(seen("a1"), "run\n");
    assert_eq!(seen("b1"), "run\n", "namespace b saw namespace a's cache");
    assert_eq!(seen("a2"), "run\nrun\n", "namespace a lost its cache");
    assert_eq!(seen("none"), "run\n", "no namespace saw a namespaced cache");
    // A cache's source= names a path in its from=: without one it is refused, with the line.
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/c,source=/x true\n",
    );
    let err = k.fails(&["build", "--progress=plain", "ctx"]);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(
        err.contains("no from=") && err.contains("add from=STAGE"),
        "{err}"
    );
    // from= a stage without the source directory fails the step, naming it.
    k.write(
        "ctx/Dockerfile",
        "FROM busybox AS seed\nFROM busybox\nRUN --mount=type=cache,target=/c,from=seed,source=/nosuch true\n",
    );
    let err = k.fails(&["build", "--progress=plain", "ctx"]);
    assert!(err.contains("/nosuch"), "{err}");
}

/// `[start, end]` of a step, from the /proc/uptime readings it wrote.
fn interval(root: &Path, stage: &str) -> (f64, f64) {
    let at = |what: &str| -> f64 {
        read(&root.join(format!("{stage}-{what}")))
            .trim()
            .parse()
            .expect("an uptime")
    };
    (at("start"), at("end"))
}

#[test]
fn cache_mount_sharing_locked_waits_and_private_separates() {
    let Some(k) = world("cache_mount_sharing_locked_waits_and_private_separates") else {
        return;
    };
    let step = |stage: &str, sharing: &str| {
        format!(
            "FROM busybox AS {stage}
             RUN --mount=type=cache,id={sharing}-cache,target=/c,sharing={sharing}              cut -d' ' -f1 /proc/uptime > /start && echo {stage} > /c/who && sleep 2 &&              cat /c/who > /seen && cut -d' ' -f1 /proc/uptime > /end
"
        )
    };
    let mut dockerfile = String::new();
    for (stage, sharing) in [
        ("locked1", "locked"),
        ("locked2", "locked"),
        ("private1", "private"),
        ("private2", "private"),
    ] {
        dockerfile.push_str(&step(stage, sharing));
    }
    dockerfile.push_str(
        "FROM busybox
",
    );
    for stage in ["locked1", "locked2", "private1", "private2"] {
        for file in ["start", "end", "seen"] {
            dockerfile.push_str(&format!(
                "COPY --from={stage} /{file} /{stage}-{file}
"
            ));
        }
    }
    k.write("ctx/Dockerfile", dockerfile);
    ok_build(&k, &["ctx", "-t", "sharing", "--jobs", "4"]);
    let fs = tree(&k, "sharing");
    let root = fs.path().join("fs");

    // locked: one step at a time.
    let (a, b) = (interval(&root, "locked1"), interval(&root, "locked2"));
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "two sharing=locked steps of one cache ran at the same time: {a:?} {b:?}"
    );
    // private: steps running together each get their own directory.
    let (a, b) = (interval(&root, "private1"), interval(&root, "private2"));
    eprintln!("sharing=private steps ran over {a:?} and {b:?}");
    for stage in ["private1", "private2"] {
        assert_eq!(
            read(&root.join(format!("{stage}-seen"))),
            format!("{stage}\n"),
            "a sharing=private step saw another step's write (intervals {a:?} {b:?})"
        );
    }
    // As in BuildKit, the second private instance is kept in the store, not thrown away:
    // three caches hold a `who` (one locked, two private when the steps overlapped).
    let overlapped = a.0 < b.1 && b.0 < a.1;
    let whos = walkdir::WalkDir::new(k.root().join("cache-mounts"))
        .max_depth(2)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "who")
        .count();
    assert_eq!(
        whos,
        if overlapped { 3 } else { 2 },
        "cache instances holding `who`"
    );
}

#[test]
fn rw_binds_leave_the_context_and_the_stage_untouched() {
    let Some(k) = world("rw_binds_leave_the_context_and_the_stage_untouched") else {
        return;
    };
    k.write("ctx/data/file.txt", "original\n");
    k.write(
        "ctx/Dockerfile",
        "FROM busybox AS stage
         RUN mkdir /out && echo original > /out/file.txt
         FROM busybox
         RUN --mount=type=bind,source=data,target=/d,rw echo changed > /d/file.txt && echo new > /d/new.txt && rm -f /d/missing
         RUN --mount=type=bind,from=stage,source=/out,target=/o,rw echo changed > /o/file.txt && echo new > /o/new.txt
         COPY --from=stage /out /from-stage/
         COPY data /from-context/
",
    );
    ok_build(&k, &["ctx", "-t", "rw"]);
    assert_eq!(read(&k.path("ctx/data/file.txt")), "original\n");
    assert_eq!(
        listing(&k.path("ctx/data")),
        vec!["file.txt".to_owned()],
        "the rw bind wrote into the host's context"
    );
    let fs = tree(&k, "rw");
    let root = fs.path().join("fs");
    for dir in ["from-stage", "from-context"] {
        assert_eq!(
            read(&root.join(dir).join("file.txt")),
            "original\n",
            "/{dir}"
        );
        assert_eq!(
            listing(&root.join(dir)),
            vec!["file.txt".to_owned()],
            "/{dir}"
        );
    }
    for gone in ["d", "o"] {
        assert!(
            root.join(gone).symlink_metadata().is_err(),
            "/{gone} is in the image"
        );
    }
}

// (c) -------------------------------------------------------------------------------------

/// A busybox rootfs with `/etc/base-version` saying `version`, imported as busybox:latest.
fn import_base(k: &Kiln, version: &str) -> Value {
    let dir = k.path(&format!("rootfs-{version}"));
    let rootfs = busybox_rootfs(&dir).expect("busybox is there: world() checked");
    std::fs::write(rootfs.join("etc/base-version"), format!("{version}\n")).expect("write");
    k.ok(&["import", rootfs.to_str().expect("utf8"), "busybox:latest"]);
    inspect(k, "busybox:latest")["Id"].clone()
}

#[test]
fn copy_link_stays_cached_when_the_base_image_changes() {
    let Some(k) = world("copy_link_stays_cached_when_the_base_image_changes") else {
        return;
    };
    let first_base = import_base(&k, "1");
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nCOPY --link a.txt /a.txt\nCOPY b.txt /b.txt\nCOPY --link c.txt /c.txt\n",
    );
    k.write("ctx/a.txt", "a\n");
    k.write("ctx/b.txt", "b\n");
    k.write("ctx/c.txt", "c\n");
    ok_build(&k, &["ctx", "-t", "linked"]);

    let second_base = import_base(&k, "2");
    assert_ne!(
        first_base, second_base,
        "the re-imported base is the same image"
    );
    let events = ok_build(&k, &["ctx", "-t", "linked"]);
    let cached = labels(&events, "cached");
    let started = labels(&events, "started");
    for link in ["COPY --link a.txt /a.txt", "COPY --link c.txt /c.txt"] {
        assert!(
            cached.iter().any(|l| l.contains(link)),
            "`{link}` is not reported cached after the base changed\ncached: {cached:?}\nstarted: {started:?}"
        );
    }
    assert!(
        started.iter().any(|l| l.contains("COPY b.txt /b.txt")),
        "the plain COPY after the changed base did not run\ncached: {cached:?}\nstarted: {started:?}"
    );
    assert!(
        !cached.iter().any(|l| l.contains("COPY b.txt /b.txt")),
        "the plain COPY after the changed base was reported cached: {cached:?}"
    );

    // A --link layer holds only what it copied, independent of the base.
    let image = inspect(&k, "linked");
    let with_layers: Vec<String> = image["Config"]["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .map(|h| h["created_by"].as_str().unwrap_or_default().to_owned())
        .collect();
    let layers = image["Manifest"]["layers"].as_array().expect("layers");
    assert_eq!(with_layers.len(), layers.len(), "{with_layers:?}");
    for (created_by, file) in [
        ("COPY a.txt /a.txt # buildkit", "a.txt"),
        ("COPY c.txt /c.txt # buildkit", "c.txt"),
    ] {
        let index = with_layers
            .iter()
            .position(|h| h == created_by)
            .unwrap_or_else(|| panic!("no history entry {created_by:?}: {with_layers:?}"));
        let entries = layer_entries(&k, layers[index]["digest"].as_str().expect("digest"));
        assert_eq!(
            entries,
            vec![file.to_owned()],
            "the layer of `{created_by}` holds more than the copied file"
        );
    }

    // The merged result is the new base plus the three files.
    let fs = tree(&k, "linked");
    let root = fs.path().join("fs");
    assert_eq!(read(&root.join("etc/base-version")), "2\n");
    for (name, content) in [("a.txt", "a\n"), ("b.txt", "b\n"), ("c.txt", "c\n")] {
        assert_eq!(read(&root.join(name)), content);
    }
    assert!(root.join("bin/busybox").is_file());
}

// (d) -------------------------------------------------------------------------------------

fn tool_exists(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn sh(script: &str) {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn add_extracts_each_compression_exactly_as_tar_x_does() {
    let Some(k) = world("add_extracts_each_compression_exactly_as_tar_x_does") else {
        return;
    };
    if !tool_exists("tar") {
        eprintln!("skipped: tar is absent");
        return;
    }
    let payload = k.path("payload");
    let ctx = k.path("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir");
    sh(&format!(
        "cd '{p}' 2>/dev/null || mkdir -p '{p}' && cd '{p}'
         printf 'top\\n' > top.txt && chmod 0644 top.txt
         printf '#!/bin/sh\\necho hi\\n' > exec.sh && chmod 0755 exec.sh
         printf 'private\\n' > private && chmod 0600 private && chown 1234:5678 private
         printf 'spaces\\n' > 'name with spaces.txt'
         mkdir -p dir/nested/deeper dir/empty sticky
         printf 'deep\\n' > dir/nested/deeper/file.txt && chmod 0640 dir/nested/deeper/file.txt
         chown -R 1000:1000 dir/nested
         chmod 0750 dir && chmod 0700 dir/empty && chmod 1777 sticky
         ln -s top.txt link && ln -s /etc/hostname dir/abs-link && ln top.txt hard.txt",
        p = payload.display()
    ));
    let tar = ctx.join("a.tar");
    sh(&format!(
        "tar --numeric-owner -C '{}' -cf '{}' top.txt exec.sh private 'name with spaces.txt' dir sticky link hard.txt",
        payload.display(),
        tar.display()
    ));
    let reference = k.path("reference");
    std::fs::create_dir_all(&reference).expect("mkdir");
    sh(&format!(
        "tar --same-owner --numeric-owner -xpf '{}' -C '{}'",
        tar.display(),
        reference.display()
    ));
    let want = describe_tree(&reference);

    let mut dockerfile = String::from("FROM busybox\nADD a.tar /x/tar/\n");
    let mut formats = vec!["tar"];
    for (ext, tool, args) in [
        ("gz", "gzip", "-c"),
        ("bz2", "bzip2", "-c"),
        ("xz", "xz", "-c"),
        ("zst", "zstd", "-q -c"),
    ] {
        if !tool_exists(tool) {
            eprintln!("skipped .tar.{ext}: {tool} is absent");
            continue;
        }
        sh(&format!(
            "{tool} {args} '{}' > '{}'",
            tar.display(),
            ctx.join(format!("a.tar.{ext}")).display()
        ));
        dockerfile.push_str(&format!("ADD a.tar.{ext} /x/{ext}/\n"));
        formats.push(ext);
    }
    k.write("ctx/Dockerfile", &dockerfile);
    ok_build(&k, &["ctx", "-t", "archives"]);
    let fs = tree(&k, "archives");
    let mut failures = Vec::new();
    for format in formats {
        let got = describe_tree(&fs.path().join("fs/x").join(format));
        if got != want {
            let mut diff = String::new();
            for key in want
                .keys()
                .chain(got.keys().filter(|k| !want.contains_key(*k)))
            {
                let (w, g) = (want.get(key), got.get(key));
                if w != g {
                    diff.push_str(&format!(
                        "  {key}: tar -x {}, ADD {}\n",
                        w.map_or("nothing", String::as_str),
                        g.map_or("nothing", String::as_str)
                    ));
                }
            }
            failures.push(format!("ADD a.{format}:\n{diff}"));
        }
    }
    assert!(
        failures.is_empty(),
        "ADD differs from tar -x:\n{}",
        failures.join("\n")
    );
}

// (e) -------------------------------------------------------------------------------------

/// One tar entry with a raw name (no sanitising, so `..` and `/` survive).
fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().expect("a gnu header");
        assert!(name.len() < 100 && link.len() < 100, "{name} / {link}");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder.append(&header, data).expect("append");
}

/// The lines of a plain-progress stderr that say what failed.
fn error_lines(err: &str) -> String {
    err.lines()
        .filter(|l| {
            ["error", "ERROR", "failed", "not found"]
                .iter()
                .any(|w| l.contains(w))
                || l.trim_start().starts_with('=')
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names directly in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every regular file of the image `name` whose content is `bytes`.
fn files_with_content(k: &Kiln, name: &str, bytes: &[u8]) -> Vec<String> {
    let fs = tree(k, name);
    let root = fs.path().join("fs");
    walkdir::WalkDir::new(&root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter(|e| std::fs::read(e.path()).is_ok_and(|b| b == bytes))
        .map(|e| {
            e.path()
                .strip_prefix(&root)
                .expect("prefix")
                .display()
                .to_string()
        })
        .collect()
}

#[test]
fn hostile_archives_cannot_write_outside_the_destination() {
    let Some(k) = world("hostile_archives_cannot_write_outside_the_destination") else {
        return;
    };
    let unique = k
        .dir
        .path()
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    let up = "../".repeat(20);
    let outside = k.path("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let canary = k.write("canary.txt", "canary, untouched\n");
    let passwd_before = std::fs::read("/etc/passwd").expect("read /etc/passwd");
    let host = |suffix: &str| PathBuf::from(format!("/tmp/{unique}-{suffix}"));
    let test_dir_before = listing(k.dir.path());

    type Entry = (String, tar::EntryType, String, &'static str);
    let file = tar::EntryType::Regular;
    let symlink = tar::EntryType::Symlink;
    let hardlink = tar::EntryType::Link;
    let cases: Vec<(&str, Vec<Entry>, Vec<PathBuf>)> = vec![
        // The control: a harmless archive builds.
        (
            "control",
            vec![("ok.txt".into(), file, String::new(), "harmless\n")],
            vec![],
        ),
        (
            "dotdot",
            vec![(
                format!("{up}tmp/{unique}-dotdot"),
                file,
                String::new(),
                "escaped by ..\n",
            )],
            vec![host("dotdot")],
        ),
        (
            "absolute",
            vec![(
                format!("/tmp/{unique}-absolute"),
                file,
                String::new(),
                "escaped by /\n",
            )],
            vec![host("absolute")],
        ),
        (
            "symlink-to-root",
            vec![
                ("rootlink".into(), symlink, "/".into(), ""),
                (
                    format!("rootlink/tmp/{unique}-via-root-link"),
                    file,
                    String::new(),
                    "escaped through a symlink to /\n",
                ),
            ],
            vec![host("via-root-link")],
        ),
        (
            "symlink-up",
            vec![
                (
                    "uplink".into(),
                    symlink,
                    up.trim_end_matches('/').into(),
                    "",
                ),
                (
                    format!("uplink/tmp/{unique}-via-up-link"),
                    file,
                    String::new(),
                    "escaped through a symlink to ../..\n",
                ),
            ],
            vec![host("via-up-link")],
        ),
        (
            "symlink-to-host-dir",
            vec![
                ("hostdir".into(), symlink, outside.display().to_string(), ""),
                (
                    "hostdir/planted".into(),
                    file,
                    String::new(),
                    "planted through a symlink to a host dir\n",
                ),
            ],
            vec![outside.join("planted")],
        ),
        (
            "hardlink-to-passwd",
            vec![("pw".into(), hardlink, "/etc/passwd".into(), "")],
            vec![],
        ),
        (
            "hardlink-then-write",
            vec![
                ("canary".into(), hardlink, canary.display().to_string(), ""),
                (
                    "canary".into(),
                    file,
                    String::new(),
                    "overwritten through a hard link\n",
                ),
                (
                    "up-canary".into(),
                    hardlink,
                    format!(
                        "{up}{}",
                        canary.display().to_string().trim_start_matches('/')
                    ),
                    "",
                ),
                (
                    "up-canary".into(),
                    file,
                    String::new(),
                    "overwritten through a hard link\n",
                ),
            ],
            vec![],
        ),
    ];

    let case_names: Vec<String> = cases.iter().map(|c| c.0.to_owned()).collect();
    let mut failures = Vec::new();
    for (name, entries, host_paths) in cases {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, link, data) in &entries {
            raw_entry(&mut builder, path, *kind, link, data.as_bytes());
        }
        let bytes = builder.into_inner().expect("finish the tar");
        k.write(&format!("{name}/evil.tar"), bytes);
        k.write(
            &format!("{name}/Dockerfile"),
            "FROM busybox\nADD evil.tar /dest/\n",
        );
        let tag = format!("hostile-{name}");
        let out = run(k
            .cmd()
            .args(["build", "--progress=plain", name, "-t", &tag]));
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("panicked") {
            failures.push(format!("{name}: kiln panicked:\n{err}"));
        }
        if name == "control" {
            assert!(out.status.success(), "{}", describe(&["build", name], &out));
            let fs = tree(&k, &tag);
            assert_eq!(read(&fs.path().join("fs/dest/ok.txt")), "harmless\n");
            continue;
        }
        for path in &host_paths {
            if path.symlink_metadata().is_ok() {
                failures.push(format!(
                    "{name}: the archive wrote {} on the host",
                    path.display()
                ));
                let _ = std::fs::remove_file(path);
            }
        }
        if out.status.success() {
            // What the archive put in the image may stay there, but host files must not
            // have been linked into it.
            let passwd = files_with_content(&k, &tag, &passwd_before);
            if !passwd.is_empty() {
                failures.push(format!(
                    "{name}: the image holds the host's /etc/passwd at {passwd:?}"
                ));
            }
            let canaries = files_with_content(&k, &tag, b"canary, untouched\n");
            if !canaries.is_empty() {
                failures.push(format!(
                    "{name}: the image holds the host file {} at {canaries:?}",
                    canary.display()
                ));
            }
        }
        if out.status.success() {
            eprintln!("{name}: the build succeeded");
        } else {
            eprintln!("{name}: the build failed:\n{}", error_lines(&err));
        }
    }
    if std::fs::read("/etc/passwd").expect("read") != passwd_before {
        failures.push("the host's /etc/passwd changed".into());
    }
    if read(&canary) != "canary, untouched\n" {
        failures.push(format!(
            "the host file {} was written through a hard link: {:?}",
            canary.display(),
            read(&canary)
        ));
    }
    if !listing(&outside).is_empty() {
        failures.push(format!(
            "files appeared in the host dir {}: {:?}",
            outside.display(),
            listing(&outside)
        ));
    }
    // Nothing new in the test's dir beside the store and the cases' contexts.
    let mut after = listing(k.dir.path());
    after.retain(|n| !test_dir_before.contains(n) && n != "root" && !case_names.contains(n));
    if !after.is_empty() {
        failures.push(format!("new files in the test dir: {after:?}"));
    }
    let strays: Vec<String> = listing(Path::new("/tmp"))
        .into_iter()
        .filter(|n| n.starts_with(&format!("{unique}-")))
        .collect();
    if !strays.is_empty() {
        failures.push(format!("files appeared in the host's /tmp: {strays:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn context_symlinks_cannot_read_host_files() {
    let Some(k) = world("context_symlinks_cannot_read_host_files") else {
        return;
    };
    let passwd = std::fs::read("/etc/passwd").expect("read /etc/passwd");
    k.write("outside-secret.txt", "outside the context\n");
    k.write("ctx/keep.txt", "keep\n");
    std::os::unix::fs::symlink("/etc", k.path("ctx/link")).expect("symlink");
    std::os::unix::fs::symlink("..", k.path("ctx/up")).expect("symlink");
    let cases = [
        ("control", "COPY keep.txt /keep\n"),
        ("copy-through-link", "COPY link/passwd /x\n"),
        ("copy-the-link", "COPY link /y/\n"),
        ("copy-up", "COPY up/outside-secret.txt /z\n"),
        (
            "bind-through-link",
            "RUN --mount=type=bind,source=link/passwd,target=/p cat /p > /w\n",
        ),
        (
            "bind-up",
            "RUN --mount=type=bind,source=up,target=/u cat /u/outside-secret.txt > /v\n",
        ),
    ];
    let mut failures = Vec::new();
    for (name, step) in cases {
        let dockerfile = format!("ctx/Dockerfile.{name}");
        k.write(&dockerfile, format!("FROM busybox\n{step}"));
        let tag = format!("ctx-{name}");
        let out = run(k.cmd().args([
            "build",
            "--progress=plain",
            "-f",
            &dockerfile,
            "ctx",
            "-t",
            &tag,
        ]));
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("panicked") {
            failures.push(format!("{name}: kiln panicked:\n{err}"));
        }
        if name == "control" {
            assert!(out.status.success(), "{}", describe(&["build", name], &out));
            continue;
        }
        if !out.status.success() {
            eprintln!("{name}: the build failed:\n{}", error_lines(&err));
            continue;
        }
        for (what, bytes) in [
            ("/etc/passwd", passwd.as_slice()),
            ("outside-secret.txt", b"outside the context\n".as_slice()),
        ] {
            let found = files_with_content(&k, &tag, bytes);
            if !found.is_empty() {
                failures.push(format!(
                    "{name} (`{}`): the image holds the host's {what} at {found:?}",
                    step.trim()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// (f) -------------------------------------------------------------------------------------

#[test]
fn heredocs_are_expanded_unless_the_delimiter_is_quoted() {
    let Some(k) = world("heredocs_are_expanded_unless_the_delimiter_is_quoted") else {
        return;
    };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\n\
         ARG WHO=expanded-value\n\
         COPY <<EOF /copy-unquoted\nwho=$WHO\nEOF\n\
         COPY <<'EOF' /copy-single\nwho=$WHO\nEOF\n\
         COPY <<\"EOF\" /copy-double\nwho=$WHO\nEOF\n\
         RUN cat <<EOF > /run-unquoted\nwho=$WHO\nEOF\n\
         RUN cat <<'EOF' > /run-single\nwho=$WHO\nEOF\n",
    );
    ok_build(&k, &["ctx", "-t", "heredocs"]);
    let fs = tree(&k, "heredocs");
    let root = fs.path().join("fs");
    let mut failures = Vec::new();
    for (file, want) in [
        ("copy-unquoted", "who=expanded-value\n"),
        ("copy-single", "who=$WHO\n"),
        ("copy-double", "who=$WHO\n"),
        ("run-unquoted", "who=expanded-value\n"),
        ("run-single", "who=$WHO\n"),
    ] {
        let got = std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| e.to_string());
        if got != want {
            failures.push(format!("/{file}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// (g) -------------------------------------------------------------------------------------

#[test]
fn add_checksum_mismatch_fails_naming_both_digests() {
    let Some(k) = world("add_checksum_mismatch_fails_naming_both_digests") else {
        return;
    };
    let served = k.path("served");
    k.write("served/file.txt", "served content\n");
    let Some(server) = HttpServer::start(&served) else {
        return;
    };
    let actual = format!("sha256:{}", sha256_hex(b"served content\n"));
    let wrong = format!("sha256:{}", "0".repeat(64));
    k.write(
        "ctx/Dockerfile",
        format!(
            "FROM busybox\nADD --checksum={wrong} {}/file.txt /file.txt\n",
            server.base()
        ),
    );
    let err = failed_build(&k, &["ctx", "-t", "mismatch"]);
    assert!(
        err.contains(&wrong),
        "the expected digest is not named:\n{err}"
    );
    assert!(
        err.contains(&actual),
        "the actual digest {actual} is not named:\n{err}"
    );
    assert!(k.fails(&["inspect", "mismatch"]).contains("mismatch"));

    // The right checksum passes, and the file is written 0600.
    k.write(
        "ctx/Dockerfile",
        format!(
            "FROM busybox\nADD --checksum={actual} {}/file.txt /file.txt\n",
            server.base()
        ),
    );
    ok_build(&k, &["ctx", "-t", "matched"]);
    let fs = tree(&k, "matched");
    let file = fs.path().join("fs/file.txt");
    assert_eq!(read(&file), "served content\n");
    assert_eq!(
        file.symlink_metadata().expect("lstat").permissions().mode() & 0o7777,
        0o600
    );
}

// (h) -------------------------------------------------------------------------------------

#[test]
fn a_missing_required_secret_fails_naming_the_flag() {
    let Some(k) = world("a_missing_required_secret_fails_naming_the_flag") else {
        return;
    };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=needed,required=true cat /run/secrets/needed\n",
    );
    let err = failed_build(&k, &["ctx", "-t", "no-secret"]);
    assert!(
        err.contains("--secret"),
        "the message does not name --secret:\n{err}"
    );
    assert!(
        err.contains("needed"),
        "the message does not name the id:\n{err}"
    );
    assert!(
        err.contains("2 | RUN"),
        "the message does not show the line:\n{err}"
    );

    // A required ssh agent likewise names --ssh.
    k.write(
        "ctx/Dockerfile.ssh",
        "FROM busybox\nRUN --mount=type=ssh,required=true true\n",
    );
    let err = failed_build(&k, &["-f", "ctx/Dockerfile.ssh", "ctx", "-t", "no-ssh"]);
    assert!(
        err.contains("--ssh"),
        "the message does not name --ssh:\n{err}"
    );

    // An env= secret whose variable is unset is missing too.
    let err = failed_build(
        &k,
        &[
            "ctx",
            "-t",
            "no-secret",
            "--secret",
            "id=needed,env=KILN_FEATURE_UNSET_VARIABLE",
        ],
    );
    assert!(
        err.contains("KILN_FEATURE_UNSET_VARIABLE") || err.contains("--secret"),
        "the message does not say what is missing:\n{err}"
    );
}

// Beyond the list: foreign platforms, RUN networks, # syntax=. ----------------------------

#[test]
fn run_for_a_foreign_platform_fails_clearly() {
    let Some(k) = world("run_for_a_foreign_platform_fails_clearly") else {
        return;
    };
    if Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        eprintln!("skipped: binfmt_misc runs arm64 binaries here (qemu-aarch64 is registered)");
        return;
    }
    if std::env::consts::ARCH == "aarch64" {
        eprintln!("skipped: arm64 is this machine's platform");
        return;
    }
    k.write("ctx/Dockerfile", "FROM scratch\nRUN true\n");
    let err = failed_build(&k, &["ctx", "--platform", "linux/arm64"]);
    assert!(err.contains("linux/arm64"), "{err}");
    assert!(err.contains("binfmt"), "no hint about emulation:\n{err}");
    assert!(err.contains("2 | RUN true"), "{err}");
}

/// The interface names in a /proc/net/dev text, without the `kiln-N` veth
/// ends of builds that tests running beside this one have open: they come and
/// go between the RUN's read and ours.
fn interfaces(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty() && !n.starts_with("kiln-"))
        .collect();
    names.sort();
    names
}

#[test]
fn run_network_none_and_host() {
    let Some(k) = world("run_network_none_and_host") else {
        return;
    };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\n\
         RUN --network=none cat /proc/net/dev > /none\n\
         RUN --network=host cat /proc/net/dev > /host\n",
    );
    let err = failed_build(&k, &["ctx", "-t", "net"]);
    assert!(
        err.contains("network.host"),
        "--network=host without --allow network.host must fail naming the entitlement:\n{err}"
    );
    ok_build(&k, &["ctx", "-t", "net", "--allow", "network.host"]);
    let fs = tree(&k, "net");
    let root = fs.path().join("fs");
    assert_eq!(interfaces(&read(&root.join("none"))), vec!["lo".to_owned()]);
    let host = interfaces(&read(Path::new("/proc/net/dev")));
    assert_eq!(interfaces(&read(&root.join("host"))), host);
}

#[test]
fn a_syntax_directive_for_another_frontend_builds_with_a_warning() {
    let Some(k) = world("a_syntax_directive_for_another_frontend_builds_with_a_warning") else {
        return;
    };
    k.write(
        "ctx/Dockerfile",
        "# syntax=example.com/other/frontend:1\nFROM busybox\nRUN echo ok > /ok\n",
    );
    let out = run(k
        .cmd()
        .args(["build", "--progress=plain", "ctx", "-t", "syntax"]));
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("example.com/other/frontend:1"),
        "no warning about the other frontend:\n{err}"
    );
    // docker/dockerfile is kiln's own syntax: no warning.
    k.write(
        "ctx/Dockerfile",
        "# syntax=docker/dockerfile:1\nFROM busybox\nRUN echo ok > /ok\n",
    );
    let out = run(k
        .cmd()
        .args(["build", "--progress=plain", "ctx", "-t", "syntax"]));
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("syntax="), "{err}");
}
