//! kiln under faults (issue 19, "found already"): the real binary, a real store, real
//! signals, a real full filesystem. Each test names the bug it keeps fixed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::build::{build_json, ran};
use crate::support::{Kiln, describe, run, world};

/// `kiln fsck` says the store is clean (exit 0).
fn assert_fsck_clean(k: &Kiln) {
    let out = run(k.cmd().arg("fsck"));
    assert!(out.status.success(), "{}", describe(&["fsck"], &out));
}

/// The pids below `pid` (children, grandchildren ...), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parents.push((child, ppid));
        }
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// The command line of a live process (None once it is gone or a zombie).
fn cmdline(pid: u32) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).replace('\0', " "))
}

/// Issue 19 (e): a build stopped by SIGINT exits 130 and by SIGTERM 143 (128 + the
/// signal, as docker's CLI does: cmd/docker/docker.go, getExitCode), after killing its
/// RUN and removing its mounts — not 1, which reads as "the build failed".
#[test]
fn a_signal_ends_a_build_with_128_plus_its_number_and_nothing_left() {
    let Some(k) = world() else { return };
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        k.write(
            "ctx/Dockerfile",
            format!("FROM busybox\nRUN sleep 1000 && echo {signal}\n"),
        );
        let child = k
            .cmd()
            .args(["build", "--progress=plain", "ctx", "-t", "interrupted"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kiln build");
        // Wait until the RUN's sleep runs, in the sandbox below kiln.
        let deadline = Instant::now() + Duration::from_secs(60);
        let sandboxed = loop {
            let below = descendants(child.id());
            if below
                .iter()
                .any(|&p| cmdline(p).is_some_and(|c| c.starts_with("sleep 1000")))
            {
                break below;
            }
            assert!(Instant::now() < deadline, "the RUN never started");
            std::thread::sleep(Duration::from_millis(50));
        };
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
        assert!(sent.expect("run kill").success());
        let sent_at = Instant::now();
        let out = child.wait_with_output().expect("wait for kiln");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            sent_at.elapsed() < Duration::from_secs(10),
            "SIG{signal} did not stop the build"
        );
        assert_eq!(out.status.code(), Some(code), "SIG{signal}\n{err}");
        assert!(err.contains("cancelled"), "{err}");
        // A killed process may take a moment to be reaped by init once kiln is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        let survivors = loop {
            let alive: Vec<String> = sandboxed
                .iter()
                .filter_map(|&p| cmdline(p).map(|c| format!("{p}: {c}")))
                .collect();
            if alive.is_empty() || Instant::now() > deadline {
                break alive;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            survivors.is_empty(),
            "processes of the build survived: {survivors:?}"
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let root = k.root().display().to_string();
        assert!(
            !mounts.lines().any(|l| l.contains(&root)),
            "a mount of the build survived:\n{mounts}"
        );
        assert_fsck_clean(&k);
    }
}

/// The snapshot ids in the store.
fn snapshot_ids(k: &Kiln) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(k.root().join("snapshots"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Runs SQL on the store's cache index (with the sqlite3 shell, as a checker).
fn cache_sql(k: &Kiln, sql: &str) {
    let out = Command::new("sqlite3")
        .arg(k.root().join("cache.db"))
        .arg(sql)
        .output()
        .expect("run sqlite3 (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 19 (b): `kiln prune` (without `--all`) removes committed snapshots that no
/// cache entry reaches — a build killed between commit and record, entries gone — and
/// keeps every snapshot an entry reaches with its parents, so a rebuild stays cached.
#[test]
fn prune_removes_snapshots_no_cache_entry_reaches() {
    let Some(k) = world() else { return };
    k.write(
        "kept/Dockerfile",
        "FROM busybox\nRUN echo kept > /k\nRUN echo more > /m\n",
    );
    k.write(
        "dropped/Dockerfile",
        "FROM busybox\nRUN echo dropped > /d\n",
    );
    let (out, _) = build_json(&k, &["kept", "-t", "kept"]);
    assert!(
        out.status.success(),
        "{}",
        describe(&["build", "kept"], &out)
    );
    let kept_id = String::from_utf8_lossy(&out.stdout).into_owned();
    let kept = snapshot_ids(&k);
    let (out, _) = build_json(&k, &["dropped", "-t", "dropped"]);
    assert!(
        out.status.success(),
        "{}",
        describe(&["build", "dropped"], &out)
    );
    let dropped: Vec<String> = snapshot_ids(&k)
        .into_iter()
        .filter(|id| !kept.contains(id))
        .collect();
    assert!(!dropped.is_empty(), "the second build made no snapshot");
    // As a build killed after committing its snapshots but before recording them leaves
    // the store: the snapshots are there, no entry names them.
    let forget: Vec<String> = dropped
        .iter()
        .map(|id| format!("DELETE FROM results WHERE CAST(value AS TEXT) LIKE '%{id}%';"))
        .collect();
    cache_sql(&k, &forget.join("\n"));
    k.ok(&["prune"]);
    let after = snapshot_ids(&k);
    let left: Vec<&String> = dropped.iter().filter(|id| after.contains(id)).collect();
    assert!(left.is_empty(), "prune kept unreachable snapshots {left:?}");
    assert_eq!(after, kept, "prune removed a reachable snapshot");
    // What the cache reaches still serves: the rebuild runs nothing, same image.
    let (out, events) = build_json(&k, &["kept", "-t", "kept"]);
    assert!(
        out.status.success(),
        "{}",
        describe(&["build", "kept"], &out)
    );
    assert_eq!(ran(&events), Vec::<String>::new(), "{events:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), kept_id);
    // The image whose snapshots went is still whole (its blobs are tagged), and building
    // it again runs its step again.
    let (out, events) = build_json(&k, &["dropped", "-t", "dropped"]);
    assert!(
        out.status.success(),
        "{}",
        describe(&["build", "dropped"], &out)
    );
    assert_eq!(ran(&events).len(), 1, "{events:?}");
    assert_fsck_clean(&k);
}

/// A tmpfs of `size` mounted on `dir` for the length of a test (unmounted on drop, also
/// when the test fails).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .expect("run mount");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(
            out.status.success(),
            "{}\n{mounts}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `bytes` of incompressible data.
fn random_file(path: &Path, bytes: usize) {
    use std::io::Read;
    let mut data = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("read /dev/urandom");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the file's dir");
    }
    std::fs::write(path, data).expect("write the big file");
}

/// Bytes under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Issue 19 (d): a store that fills up while a step's layer is written. The error names
/// the step, the store and "no space left on device"; the step is not recorded, so once
/// there is room a rebuild runs it again and succeeds; the store is clean throughout.
/// Also the step itself running out of space (a COPY bigger than what is free).
#[test]
fn a_full_store_names_the_step_and_records_nothing() {
    if !crate::support::is_root("a store on a tmpfs needs mount") {
        return;
    }
    let k = Kiln::new();
    let store = Tmpfs::mount(&k.root(), "64m");
    let Some(rootfs) = crate::support::busybox_rootfs(&k.path("rootfs")) else {
        return;
    };
    k.ok(&["import", rootfs.to_str().unwrap(), "busybox:latest"]);
    let root = k.root().display().to_string();
    // 40 MB fits as a snapshot, but not a second time as the layer blob.
    random_file(&k.path("ctx/big"), 40 << 20);
    k.write("ctx/Dockerfile", "FROM busybox\nCOPY big /big\n");
    let (out, _) = build_json(&k, &["ctx", "-t", "big"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the build fit in 64 MB?\n{err}");
    for part in [
        "[2/2] COPY big /big",
        "no space left on device",
        root.as_str(),
    ] {
        assert!(err.contains(part), "the error lacks {part:?}:\n{err}");
    }
    assert_fsck_clean(&k);
    // The failed step's snapshot is no cache entry's: prune frees it.
    k.ok(&["prune"]);
    assert!(
        dir_bytes(&k.root().join("snapshots")) < 10 << 20,
        "prune left the failed step's snapshot"
    );
    // With room, the same build runs the step again (it was never recorded) and works.
    store.resize("256m");
    let (out, events) = build_json(&k, &["ctx", "-t", "big"]);
    assert!(
        out.status.success(),
        "{}",
        describe(&["build", "ctx"], &out)
    );
    assert_eq!(
        ran(&events),
        vec!["[2/2] COPY big /big".to_owned()],
        "{events:?}"
    );
    assert_fsck_clean(&k);

    // The step itself runs out of room: it fails naming itself, leaves no snapshot.
    k.ok(&["rmi", "big"]);
    k.ok(&["prune", "--all"]);
    store.resize("64m");
    random_file(&k.path("ctx/bigger"), 80 << 20);
    k.write("ctx/Dockerfile", "FROM busybox\nCOPY bigger /bigger\n");
    let before = snapshot_ids(&k);
    let (out, _) = build_json(&k, &["ctx", "-t", "bigger"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "80 MB fit in 64 MB?\n{err}");
    for part in [
        "[2/2] COPY bigger /bigger",
        "no space left on device",
        root.as_str(),
    ] {
        assert!(err.contains(part), "the error lacks {part:?}:\n{err}");
    }
    let new: Vec<String> = snapshot_ids(&k)
        .into_iter()
        .filter(|id| !before.contains(id))
        .filter(|id| {
            let meta =
                std::fs::read_to_string(k.root().join("snapshots").join(id).join("meta.json"));
            !meta.unwrap_or_default().contains("\"committed\":true")
        })
        .collect();
    assert!(
        new.is_empty(),
        "the failed step left unfinished snapshots {new:?}"
    );
    assert_fsck_clean(&k);
    drop(store);
}

/// SIGSTOP on a process until dropped (then SIGCONT), also when the test fails.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        let sent = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        assert!(sent.expect("run kill").success());
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// Issue 19 (c): a registry that stops answering (SIGSTOP) must not hang a push with no
/// output. Each request that makes no progress for the stall timeout (kiln's config
/// file, `registry-stall-timeout`) is retried with backoff, each retry shown; a registry
/// that comes back gets the push, one that does not gets a bounded failure naming the
/// operation and the stall.
#[test]
fn a_registry_that_stops_answering_is_retried_and_shown() {
    use kiln_testkit::registry::{REGISTRY_BIN, RegistryServer, ServerOptions};
    let Some(k) = world() else { return };
    if !Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipped: {REGISTRY_BIN} is absent (apt-get install docker-registry)");
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let config = k.write("kiln.json", r#"{"registry-stall-timeout": 1}"#);
    let target = format!("{}/stall/app:1", server.host());
    random_file(&k.path("ctx/big"), 4 << 20);
    k.write("ctx/Dockerfile", "FROM busybox\nCOPY big /big\n");
    let (out, _) = build_json(&k, &["ctx", "-t", &target]);
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    let push = |k: &Kiln| {
        k.cmd()
            .env("KILN_CONFIG", &config)
            .args(["push", &target])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kiln push")
    };

    // Stopped for good: the push gives up in bounded time, saying why.
    let stopped = Stopped::stop(server.pid());
    let started = Instant::now();
    let out = push(&k).wait_with_output().expect("wait for kiln push");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "pushed to a stopped registry?\n{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a stalled push took {:?}",
        started.elapsed()
    );
    for part in [
        "no progress for 1s: the registry stopped answering",
        "try 1 of 5 failed",
        "retrying in",
    ] {
        assert!(err.contains(part), "the output lacks {part:?}:\n{err}");
    }
    drop(stopped);

    // Stopped for a while: retries carry the push through once it answers again.
    let stopped = Stopped::stop(server.pid());
    let child = push(&k);
    std::thread::sleep(Duration::from_millis(2500));
    drop(stopped);
    let out = child.wait_with_output().expect("wait for kiln push");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", describe(&["push"], &out));
    assert!(
        err.contains("no progress for 1s"),
        "no retry was shown:\n{err}"
    );
    // Stopped mid-upload (once the registry has begun an upload session): the upload
    // is retried, and the registry ends up with the whole image.
    let second = format!("{}/stall/app:2", server.host());
    random_file(&k.path("ctx/big"), 48 << 20);
    let (out, _) = build_json(&k, &["ctx", "-t", &second]);
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    let uploads = server
        .dir
        .path()
        .join("data/docker/registry/v2/repositories/stall/app/_uploads");
    let child = k
        .cmd()
        .env("KILN_CONFIG", &config)
        .args(["push", &second])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln push");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&uploads).map_or(true, |mut d| d.next().is_none()) {
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let stopped = Stopped::stop(server.pid());
    std::thread::sleep(Duration::from_millis(2500));
    drop(stopped);
    let out = child.wait_with_output().expect("wait for kiln push");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", describe(&["push"], &out));
    assert!(
        err.contains("upload of blob") && err.contains("no progress for 1s"),
        "the upload's retry was not shown:\n{err}"
    );
    let target = second;
    // What the registry now has is the image: skopeo reads it back whole.
    let inspected = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output();
    if let Ok(inspected) = inspected {
        assert!(
            inspected.status.success(),
            "{}",
            String::from_utf8_lossy(&inspected.stderr)
        );
    }
}

/// Issue 19 (a), end to end: builds started together right after `kiln prune --all`
/// removed the cache index all create it at once; every one succeeds with the same
/// image. (The unit test `cache_index::tests::many_first_opens_at_once_all_succeed`
/// reproduces the race reliably; this checks the real binary on a real store.)
#[test]
fn builds_started_together_after_prune_all_all_succeed() {
    let Some(k) = world() else { return };
    k.write("ctx/f", "content\n");
    k.write("ctx/Dockerfile", "FROM busybox\nCOPY f /f\nENV A=1\n");
    let mut ids = std::collections::BTreeSet::new();
    for round in 0..3 {
        k.ok(&["prune", "--all"]);
        assert!(
            !k.root().join("cache.db").exists(),
            "prune --all kept the index"
        );
        let children: Vec<_> = (0..16)
            .map(|_| {
                // With SOURCE_DATE_EPOCH the image is the same whichever build made
                // the step and when.
                k.cmd()
                    .env("SOURCE_DATE_EPOCH", "1700000000")
                    .args(["build", "-q", "ctx"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start kiln build")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("wait for kiln build");
            assert!(
                out.status.success(),
                "round {round}: {}",
                describe(&["build", "-q", "ctx"], &out)
            );
            ids.insert(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
    }
    assert_eq!(
        ids.len(),
        1,
        "concurrent builds gave different images: {ids:?}"
    );
    assert_fsck_clean(&k);
}
