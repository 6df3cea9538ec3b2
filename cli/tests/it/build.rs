//! `kiln build` end to end (issue 5): parallel stages, the cache (rebuild, touch, one
//! change, build args), `--target` pruning, failures and their messages. Real sandbox,
//! real overlay snapshots, a busybox-static base made with `kiln import`.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

use crate::support::{Kiln, busybox_rootfs, describe, is_root, run, world};

/// The events of a `--progress=rawjson` build (stderr), and its output.
pub(crate) fn build_json(k: &Kiln, args: &[&str]) -> (std::process::Output, Vec<Value>) {
    let mut all = vec!["build", "--progress=rawjson"];
    all.extend_from_slice(args);
    let out = run(k.cmd().args(&all));
    let events = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a rawjson line parses"))
        .collect();
    (out, events)
}

/// Labels of the steps that ran (not cached), in the order they started.
pub(crate) fn ran(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "started")
        .map(|e| e["label"].as_str().unwrap_or_default().to_owned())
        // The base image's first unpack is work too, but not a Dockerfile step's.
        .filter(|l| !l.starts_with("[internal]") && !l.contains("] FROM "))
        .collect()
}

fn cached(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "cached")
        .map(|e| e["label"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn ok_build(k: &Kiln, args: &[&str]) -> Vec<Value> {
    let (out, events) = build_json(k, args);
    assert!(out.status.success(), "{}", describe(args, &out));
    events
}

fn inspect(k: &Kiln, name: &str) -> Value {
    let text = k.ok(&["inspect", name]);
    let v: Value = serde_json::from_str(&text).expect("inspect prints JSON");
    if v.is_array() { v[0].clone() } else { v }
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let Some(k) = world() else { return };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox AS a\nRUN sleep 2 && echo 1 > /f\n\
         FROM busybox AS b\nRUN sleep 2 && echo 2 > /f\n\
         FROM busybox AS c\nRUN sleep 2 && echo 3 > /f\n\
         FROM busybox\nCOPY --from=a /f /a\nCOPY --from=b /f /b\nCOPY --from=c /f /c\n",
    );
    let events = ok_build(&k, &["ctx", "-t", "par"]);
    // Each sleeping RUN's [start, done] interval, from the events' own timestamps.
    let mut spans: HashMap<u64, (u128, u128)> = HashMap::new();
    let mut sleepers = Vec::new();
    for e in &events {
        let v = e["vertex"].as_u64().unwrap();
        let at = e["at_ns"].as_u64().unwrap() as u128;
        match e["type"].as_str().unwrap() {
            "started" if e["label"].as_str().unwrap().contains("sleep 2") => {
                sleepers.push(v);
                spans.entry(v).or_insert((at, 0)).0 = at;
            }
            "done" => spans.entry(v).or_insert((0, 0)).1 = at,
            _ => {}
        }
    }
    assert_eq!(sleepers.len(), 3, "{events:?}");
    let latest_start = sleepers.iter().map(|v| spans[v].0).max().unwrap();
    let earliest_end = sleepers.iter().map(|v| spans[v].1).min().unwrap();
    assert!(
        latest_start < earliest_end,
        "the three stages did not overlap: {:?}",
        sleepers.iter().map(|v| spans[v]).collect::<Vec<_>>()
    );
    let tree = crate::support::image_tree(&k, "par");
    for (f, want) in [("a", "1\n"), ("b", "2\n"), ("c", "3\n")] {
        assert_eq!(std::fs::read_to_string(tree.path().join(f)).unwrap(), want);
    }
}

const CACHE_DOCKERFILE: &str = "FROM busybox\n\
RUN echo base > /base\n\
COPY a.txt /a.txt\n\
RUN cat /a.txt > /a.copy\n\
COPY b.txt /b.txt\n\
RUN cat /b.txt > /b.copy\n\
ARG V=1\n\
RUN echo $V > /v\n";

#[test]
fn the_cache_reuses_exactly_what_did_not_change() {
    let Some(k) = world() else { return };
    k.write("ctx/Dockerfile", CACHE_DOCKERFILE);
    k.write("ctx/a.txt", "a1");
    k.write("ctx/b.txt", "b1");
    let first = ok_build(&k, &["ctx", "-t", "c"]);
    assert_eq!(ran(&first).len(), 6, "{:?}", ran(&first));
    let id = inspect(&k, "c")["Id"].clone();

    // Unchanged: everything cached, and the very same image.
    let again = ok_build(&k, &["ctx", "-t", "c"]);
    assert!(ran(&again).is_empty(), "ran again: {:?}", ran(&again));
    assert_eq!(inspect(&k, "c")["Id"], id);

    // touch changes times only: still all cached.
    let touched = Command::new("touch")
        .arg(k.path("ctx/a.txt"))
        .arg(k.path("ctx/b.txt"))
        .arg(k.path("ctx/Dockerfile"))
        .status()
        .unwrap();
    assert!(touched.success());
    let after_touch = ok_build(&k, &["ctx", "-t", "c"]);
    assert!(ran(&after_touch).is_empty(), "{:?}", ran(&after_touch));
    assert_eq!(inspect(&k, "c")["Id"], id);

    // One file's content: only the steps from the COPY that reads it on.
    k.write("ctx/b.txt", "b2");
    let changed = ok_build(&k, &["ctx", "-t", "c"]);
    let labels = ran(&changed);
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert!(labels[0].contains("COPY b.txt"), "{labels:?}");
    assert!(labels[1].contains("cat /b.txt"), "{labels:?}");
    assert!(labels[2].contains("echo $V"), "{labels:?}");
    assert!(cached(&changed).iter().any(|l| l.contains("COPY a.txt")));

    // A changed build arg: only the RUNs after its ARG.
    let with_arg = ok_build(&k, &["ctx", "-t", "c", "--build-arg", "V=2"]);
    let labels = ran(&with_arg);
    assert_eq!(labels.len(), 1, "{labels:?}");
    assert!(labels[0].contains("echo $V"), "{labels:?}");
    let tree = crate::support::image_tree(&k, "c");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("v")).unwrap(),
        "2\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.path().join("b.copy")).unwrap(),
        "b2"
    );

    // --no-cache runs everything; --no-cache-filter only the named stage's steps.
    let no_cache = ok_build(&k, &["ctx", "-t", "c", "--no-cache"]);
    assert_eq!(ran(&no_cache).len(), 6, "{:?}", ran(&no_cache));
}

#[test]
fn no_cache_filter_rebuilds_only_that_stage() {
    let Some(k) = world() else { return };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox AS deps\nRUN echo deps > /d\n\
         FROM busybox AS app\nCOPY --from=deps /d /d\nRUN echo app > /a\n",
    );
    ok_build(&k, &["ctx"]);
    let events = ok_build(&k, &["ctx", "--no-cache-filter", "app"]);
    let labels = ran(&events);
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(labels.iter().all(|l| l.starts_with("[app ")), "{labels:?}");
}

#[test]
fn target_prunes_unused_stages_and_a_failing_stage_fails_the_build() {
    let Some(k) = world() else { return };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox AS broken\nRUN echo doomed && exit 3\n\
         FROM busybox AS slow\nRUN sleep 1000\n\
         FROM busybox AS good\nRUN echo fine > /ok\n\
         FROM busybox\nCOPY --from=slow / /slow\nCOPY --from=broken / /broken\n",
    );
    // --target good never runs the broken stage.
    let events = ok_build(&k, &["ctx", "--target", "good", "-t", "g"]);
    assert_eq!(ran(&events).len(), 1, "{:?}", ran(&events));
    assert!(ran(&events)[0].contains("echo fine"));

    // The full build needs the broken stage: it fails, shows the line, the command and
    // its exit code and output, and cancels the sleeping stage well before 1000 s.
    let started = std::time::Instant::now();
    let out = run(k
        .cmd()
        .args(["build", "--progress=plain", "ctx", "-t", "all"]));
    assert!(
        started.elapsed().as_secs() < 60,
        "the sleeping stage was not cancelled"
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&["build"], &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:2:1"), "{err}");
    assert!(err.contains("2 | RUN echo doomed && exit 3"), "{err}");
    assert!(
        err.contains("process \"/bin/sh -c echo doomed && exit 3\" did not complete successfully: exit code: 3"),
        "{err}"
    );
    assert!(
        err.contains("    doomed"),
        "the output tail is missing: {err}"
    );
    assert!(k.fails(&["inspect", "all"]).contains("all"));
    // Nothing of the failed build is left mounted.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(k.root().to_str().unwrap()), "{mounts}");
}

#[test]
fn lowering_errors_point_at_the_line() {
    let Some(k) = world() else { return };
    let cases: &[(&str, &[&str], &str, &str)] = &[
        (
            "FROM busybox AS one\nRUN true\n",
            &["--target", "onee"],
            "target stage \"onee\" could not be found",
            "did you mean one?",
        ),
        (
            "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\n",
            &["--target", "a"],
            "cannot copy from stage \"b\", it needs to be defined before current stage \"a\"",
            ":2:1: ",
        ),
        (
            "FROM busybox AS a\nCOPY --from=a /x /x\n",
            &[],
            "circular dependency detected on stage: a",
            ":2:1: ",
        ),
        (
            "FROM busybox\nCOPY --from=7 /x /x\n",
            &[],
            "invalid stage index 7",
            ":2:1: ",
        ),
        ("FROM nosuchimage:1\n", &[], "nosuchimage:1", ":1:1: "),
        (
            "FROM busybox\nCOPY missing.txt /\n",
            &[],
            "\"/missing.txt\": not found",
            "2 | COPY missing.txt /",
        ),
        (
            "FROM busybox\nCOPY secret.txt /\n",
            &[],
            "excluded by .dockerignore line 1",
            "remove the pattern from .dockerignore",
        ),
        (
            "FROM busybox\nCOPY --chmod=999 a /\n",
            &[],
            "invalid chmod parameter",
            ":2:1: ",
        ),
        (
            "FROM busybox\nRUNN true\n",
            &[],
            "unknown instruction",
            "did you mean RUN?",
        ),
    ];
    k.write("ctx/secret.txt", "s");
    k.write("ctx/.dockerignore", "secret.txt\n");
    for (i, (dockerfile, extra, message, detail)) in cases.iter().enumerate() {
        let path = format!("ctx/Dockerfile.{i}");
        k.write(&path, dockerfile);
        let mut args = vec!["build", "--progress=plain", "-f", &path, "ctx"];
        args.extend_from_slice(extra);
        let out = run(k.cmd().args(&args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{dockerfile}\n{err}");
        assert!(
            err.contains(message),
            "{dockerfile}\nwant {message:?} in\n{err}"
        );
        assert!(
            err.contains(detail),
            "{dockerfile}\nwant {detail:?} in\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // Usage errors exit 2, as docker build does.
    let out = run(k.cmd().args(["build", "--no-such-flag", "ctx"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_failed_build_leaves_no_snapshot_or_tag_behind() {
    let Some(k) = world() else { return };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN echo x > /x && exit 1\n",
    );
    let before: Vec<_> = std::fs::read_dir(k.root().join("snapshots"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    k.fails(&["build", "ctx", "-t", "broken"]);
    let after: Vec<_> = std::fs::read_dir(k.root().join("snapshots"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    // The base image's unpacked snapshot may be new; the failed RUN's must be gone.
    let mut uncommitted = 0;
    for name in after.iter().filter(|n| !before.contains(n)) {
        let meta = std::fs::read_to_string(k.root().join("snapshots").join(name).join("meta.json"))
            .unwrap_or_default();
        if !meta.contains("\"committed\":true") {
            uncommitted += 1;
        }
    }
    assert_eq!(
        uncommitted, 0,
        "an active snapshot of the failed step was left"
    );
    assert!(k.fails(&["inspect", "broken"]).contains("broken"));
}

#[test]
fn sigint_cancels_cleanly() {
    let Some(k) = world() else { return };
    k.write("ctx/Dockerfile", "FROM busybox\nRUN sleep 1000\n");
    let child = k
        .cmd()
        .args(["build", "--progress=plain", "ctx", "-t", "interrupted"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pid = child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed().as_secs() < 10,
        "Ctrl-C did not stop the build"
    );
    // 128 + SIGINT, as docker's CLI exits (cmd/docker/docker.go, getExitCode).
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cancelled"), "{err}");
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains("sleep 1000"),
        "the sandboxed sleep survived"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(k.root().to_str().unwrap()));
}

#[test]
fn from_pulls_an_image_that_skopeo_put_into_a_registry() {
    use kiln_testkit::registry::{REGISTRY_BIN, RegistryServer, ServerOptions};
    let Some(k) = world() else { return };
    if !std::path::Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipped: {REGISTRY_BIN} is absent (apt-get install docker-registry)");
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let target = format!("{}/library/busybox:1", server.host());
    let copied = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!(
            "oci:{}:busybox:latest",
            k.root().join("content").display()
        ))
        .arg(format!("docker://{target}"))
        .output();
    match copied {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => {
            eprintln!("skipped: skopeo is absent (apt-get install skopeo)");
            return;
        }
    }
    // A store that has never seen busybox: FROM must pull it.
    let other = Kiln::new();
    other.write(
        "ctx/Dockerfile",
        format!("FROM {target}\nRUN echo built on pulled > /f\n"),
    );
    let events = ok_build(&other, &["ctx", "-t", "on-pulled"]);
    assert_eq!(ran(&events).len(), 1, "{events:?}");
    let tree = crate::support::image_tree(&other, "on-pulled");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("f")).unwrap(),
        "built on pulled\n"
    );
    assert!(tree.path().join("bin/busybox").exists());
}

#[test]
fn jobs_one_runs_one_step_at_a_time() {
    let Some(k) = world() else { return };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox AS a\nRUN sleep 1 && echo a > /f\n\
         FROM busybox AS b\nRUN sleep 1 && echo b > /f\n\
         FROM busybox\nCOPY --from=a /f /a\nCOPY --from=b /f /b\n",
    );
    let events = ok_build(&k, &["ctx", "--jobs", "1"]);
    let mut spans: HashMap<u64, (u128, u128)> = HashMap::new();
    for e in &events {
        let v = e["vertex"].as_u64().unwrap();
        let at = e["at_ns"].as_u64().unwrap() as u128;
        match e["type"].as_str().unwrap() {
            "started" if e["label"].as_str().unwrap().contains("sleep 1") => {
                spans.entry(v).or_insert((0, 0)).0 = at;
            }
            "done" if spans.contains_key(&v) => spans.get_mut(&v).unwrap().1 = at,
            _ => {}
        }
    }
    let mut intervals: Vec<(u128, u128)> = spans.into_values().collect();
    intervals.sort();
    assert_eq!(intervals.len(), 2, "{events:?}");
    assert!(
        intervals[0].1 <= intervals[1].0,
        "--jobs 1 overlapped: {intervals:?}"
    );
}

#[test]
fn same_inputs_and_source_date_epoch_give_the_same_digest() {
    if !is_root("kiln build runs RUN steps in namespaces") {
        return;
    }
    let mut digests = Vec::new();
    for _ in 0..2 {
        // Two worlds: two rootfs dirs made at different times, two stores.
        let k = Kiln::new();
        let Some(rootfs) = busybox_rootfs(&k.path("rootfs")) else {
            return;
        };
        let import = run(k.cmd().env("SOURCE_DATE_EPOCH", "1700000000").args([
            "import",
            rootfs.to_str().unwrap(),
            "busybox:latest",
        ]));
        assert!(
            import.status.success(),
            "{}",
            describe(&["import"], &import)
        );
        k.write(
            "ctx/Dockerfile",
            "FROM busybox\nCOPY a.txt /a.txt\nRUN echo built > /b && mkdir -p /d/e\nWORKDIR /w\nENV X=1\n",
        );
        k.write("ctx/a.txt", "same content");
        let out = run(k.cmd().env("SOURCE_DATE_EPOCH", "1700000000").args([
            "build",
            "ctx",
            "-t",
            "repro",
            "--progress=quiet",
        ]));
        assert!(out.status.success(), "{}", describe(&["build"], &out));
        let inspect = inspect(&k, "repro");
        assert_eq!(inspect["Config"]["created"], "2023-11-14T22:13:20Z");
        digests.push((
            inspect["Id"].as_str().unwrap().to_owned(),
            inspect["Config"].to_string(),
        ));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(digests[0], digests[1], "the two builds differ");
}

#[test]
fn prune_waits_for_running_builds_and_drops_cache_mounts() {
    let Some(k) = world() else { return };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/c echo x > /c/f && sleep 3\n",
    );
    let mut build = k
        .cmd()
        .args(["build", "--progress=quiet", "ctx", "-t", "slow"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let err = k.fails(&["prune", "--all"]);
    assert!(err.contains("a build is using the store"), "{err}");
    assert!(build.wait().unwrap().success());
    assert!(k.root().join("cache-mounts").exists());
    k.ok(&["prune", "--all"]);
    assert!(!k.root().join("cache-mounts").exists());
    assert!(
        k.ok(&["inspect", "slow"]).contains("Config"),
        "tags survive prune"
    );
}

#[test]
fn outputs_are_read_by_independent_tools() {
    use kiln_testkit::registry::{REGISTRY_BIN, RegistryServer, ServerOptions};
    let Some(k) = world() else { return };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN mkdir -p /app && echo out > /app/f && rm /bin/vi\nCMD [\"/app/f\"]\n",
    );
    let out = k.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = |spec: String| spec;
    let oci = out.join("img.tar");
    let docker = out.join("docker.tar");
    let local = out.join("fs");
    let meta = out.join("meta.json");
    k.ok(&[
        "build",
        "ctx",
        "-t",
        "outs",
        "--progress=quiet",
        "-o",
        &o(format!("type=oci,dest={}", oci.display())),
        "-o",
        &o(format!("type=docker,dest={}", docker.display())),
        "-o",
        &o(format!("type=local,dest={}", local.display())),
        "-o",
        "type=image",
        "--metadata-file",
        meta.to_str().unwrap(),
    ]);
    // type=local equals the image's own tree.
    let tree = crate::support::image_tree(&k, "outs");
    assert_eq!(
        std::fs::read_to_string(local.join("app/f")).unwrap(),
        "out\n"
    );
    assert!(!local.join("bin/vi").exists() && !tree.path().join("bin/vi").exists());
    // Same names, kinds, modes, owners and contents.
    assert_eq!(
        crate::support::describe_tree(&local),
        crate::support::describe_tree(tree.path())
    );
    let metadata: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(metadata["image.name"], "outs:latest");
    assert!(
        metadata["containerimage.config.digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let tool = |args: &[&str]| Command::new(args[0]).args(&args[1..]).output();
    match tool(&[
        "skopeo",
        "inspect",
        &format!("oci-archive:{}", oci.display()),
    ]) {
        Ok(o) => assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => eprintln!("skopeo absent: archives not checked"),
    }
    if let Ok(o) = tool(&[
        "skopeo",
        "inspect",
        &format!("docker-archive:{}", docker.display()),
    ]) {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // umoci unpacks the OCI output (as a layout directory).
    let layout = out.join("layout");
    k.ok(&[
        "build",
        "ctx",
        "--progress=quiet",
        "-o",
        &format!("type=oci,dest={},tar=false,name=outs:1", layout.display()),
    ]);
    if let Ok(o) = tool(&[
        "umoci",
        "unpack",
        "--image",
        &format!("{}:1", layout.display()),
        out.join("bundle").to_str().unwrap(),
    ]) {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            std::fs::read_to_string(out.join("bundle/rootfs/app/f")).unwrap(),
            "out\n"
        );
    }
    // --push: the registry gets it; a second push uploads nothing.
    if !std::path::Path::new(REGISTRY_BIN).exists() {
        eprintln!("--push not checked: {REGISTRY_BIN} is absent (apt-get install docker-registry)");
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let target = format!("{}/kiln/outs:1", server.host());
    let first = run(k
        .cmd()
        .args(["build", "ctx", "-t", &target, "--push", "--progress=plain"]));
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(err.contains(&format!("Pushed {target}")), "{err}");
    let second = run(k
        .cmd()
        .args(["build", "ctx", "-t", &target, "--push", "--progress=plain"]));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("(0 blobs uploaded)"), "{err}");
    if let Ok(o) = tool(&[
        "skopeo",
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]) {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // As `docker build --push`: the image is also in the local store under its tag, so
    // `kiln push` and a later FROM find it with the registry gone.
    let images = k.ok(&["images"]);
    assert!(
        images.contains(&format!("{}/kiln/outs", server.host())),
        "{images}"
    );
    k.ok(&["push", &target]);
    drop(server);
    k.write(
        "later/Dockerfile",
        format!("FROM {target}\nRUN cat /app/f > /again\n"),
    );
    k.ok(&["build", "later", "-t", "later", "--progress=plain"]);
}

/// Git URLs in the query form of dockerfile frontend 1.17+ (`dfgitutil/git_ref.go`), in
/// ADD and as the build context, and `SOURCE_DATE_EPOCH=context` taking the context's
/// commit time (`epoch.go`).
#[test]
fn git_urls_in_the_query_form() {
    let Some(k) = world() else { return };
    let Some(server) = GitServer::start(&k) else {
        return;
    };
    let url = server.url();
    let v1 = Command::new("git")
        .current_dir(k.path("git/work"))
        .args(["rev-parse", "v1"])
        .output()
        .unwrap();
    let v1 = String::from_utf8_lossy(&v1.stdout).trim().to_owned();
    k.write(
        "ctx/Dockerfile",
        format!(
            "FROM busybox\n\
             ADD {url}?tag=v1&subdir=sub&checksum={} /tagged/\n\
             ADD {url}?branch=main&keep-git-dir=true /whole/\n\
             ADD {url}?ref=subs&submodules=false /subs/\n",
            &v1[..12]
        ),
    );
    k.ok(&["build", "ctx", "-t", "git-query", "--progress=plain"]);
    let tree = crate::support::image_tree(&k, "git-query");
    let read = |p: &str| std::fs::read_to_string(tree.path().join(p)).unwrap();
    assert_eq!(read("tagged/a.txt"), "one\n");
    assert_eq!(read("whole/sub/a.txt"), "two\n");
    assert!(
        tree.path().join("whole/.git").is_dir(),
        "?keep-git-dir=true keeps .git"
    );
    assert!(tree.path().join("subs/.gitmodules").is_file());
    // Each class of bad URL fails at its line with BuildKit's words.
    for (add, words) in [
        (
            format!("{url}?tag=v1&checksum=0123abcd"),
            "expected checksum to match 0123abcd",
        ),
        (format!("{url}?depth=1"), "unexpected query \"depth\""),
        (
            format!("{url}?tag=v1&branch=main"),
            "branch conflicts with tag",
        ),
        (format!("{url}?ref=v1#main"), "ref conflicts"),
        (format!("{url}?ref=subs"), "?submodules=false"),
        (
            format!("{url}?mtime=commit"),
            "applies to a git build context",
        ),
        (
            format!("--keep-git-dir {url}?keep-git-dir=false"),
            "inconsistent keep-git-dir",
        ),
    ] {
        k.write("bad/Dockerfile", format!("FROM busybox\nADD {add} /x/\n"));
        let err = k.fails(&["build", "bad", "--progress=plain"]);
        assert!(err.contains(words), "ADD {add}: {err}");
        assert!(err.contains("Dockerfile:2"), "ADD {add}: {err}");
    }
    // The query form as the build context; SOURCE_DATE_EPOCH=context is the commit's time,
    // ?mtime=commit gives every file that time.
    k.ok(&[
        "build",
        &format!("{url}?tag=v1&mtime=commit"),
        "-t",
        "git-ctx-query",
        "--build-arg",
        "SOURCE_DATE_EPOCH=context",
        "--progress=plain",
    ]);
    let image = crate::build_topics::inspect(&k, "git-ctx-query");
    assert_eq!(
        image["Config"]["created"], "2021-01-01T00:00:00Z",
        "{image}"
    );
    let tree = crate::support::image_tree(&k, "git-ctx-query");
    assert_eq!(read_in(&tree, "ctx-a.txt"), "one\n");
    let mtime = std::fs::symlink_metadata(tree.path().join("ctx-a.txt"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        1609459200
    );
    // Not a git context: `context` gives no time; anything else is refused.
    k.write(
        "plain/Dockerfile",
        "FROM busybox\nRUN echo \"[$SOURCE_DATE_EPOCH]\" > /epoch\n",
    );
    k.ok(&[
        "build",
        "plain",
        "-t",
        "plain-epoch",
        "--build-arg",
        "SOURCE_DATE_EPOCH=context",
    ]);
    let err = k.fails(&[
        "build",
        "plain",
        "--build-arg",
        "SOURCE_DATE_EPOCH=yesterday",
    ]);
    assert!(
        err.contains("invalid SOURCE_DATE_EPOCH: yesterday"),
        "{err}"
    );
    let err = k.fails(&["build", &format!("{url}?depth=1"), "--progress=plain"]);
    assert!(err.contains("unexpected query \"depth\""), "{err}");
}

fn read_in(tree: &tempfile::TempDir, path: &str) -> String {
    std::fs::read_to_string(tree.path().join(path)).unwrap()
}

/// A smart-HTTP git server for the test: `git http-backend` behind python's CGI server
/// on 127.0.0.1, stopped on drop. (The test uses git as a peer; kiln itself never runs
/// it: it clones with gitoxide.)
struct GitServer {
    child: std::process::Child,
    port: u16,
}

impl GitServer {
    fn start(k: &Kiln) -> Option<GitServer> {
        let has = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
        if !has("git") || !has("python3") {
            eprintln!("skipped: git and python3 are needed to serve a repository");
            return None;
        }
        let git = |dir: &std::path::Path, args: &[&str]| {
            let out = Command::new("git")
                .current_dir(dir)
                .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
                .args(args)
                // A fixed commit time, far from now: SOURCE_DATE_EPOCH=context and
                // ?mtime=commit are told apart from the checkout's time.
                .env("GIT_COMMITTER_DATE", "@1609459200 +0000")
                .env("GIT_AUTHOR_DATE", "@1609459200 +0000")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "git {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let work = k.path("git/work");
        std::fs::create_dir_all(work.join("sub")).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("sub/a.txt"), "one\n").unwrap();
        std::fs::write(
            work.join("Dockerfile"),
            "FROM busybox\nCOPY sub/a.txt /ctx-a.txt\n",
        )
        .unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-qm", "one"]);
        git(&work, &["tag", "v1"]);
        std::fs::write(work.join("sub/a.txt"), "two\n").unwrap();
        git(&work, &["commit", "-qam", "two"]);
        // A branch with submodules, which kiln does not fetch.
        git(&work, &["checkout", "-q", "-b", "subs"]);
        std::fs::write(
            work.join(".gitmodules"),
            "[submodule \"lib\"]\n\tpath = lib\n\turl = https://example.invalid/lib.git\n",
        )
        .unwrap();
        git(&work, &["add", ".gitmodules"]);
        git(&work, &["commit", "-qm", "subs"]);
        git(&work, &["checkout", "-q", "main"]);
        let repos = k.path("git/repos");
        std::fs::create_dir_all(&repos).unwrap();
        git(
            &repos,
            &["clone", "-q", "--bare", work.to_str().unwrap(), "r.git"],
        );
        let cgi = k.path("git/srv/cgi-bin");
        std::fs::create_dir_all(&cgi).unwrap();
        std::fs::write(
            cgi.join("git"),
            format!(
                "#!/bin/sh\nexport GIT_PROJECT_ROOT={}\nexport GIT_HTTP_EXPORT_ALL=1\n\
                 export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0='*'\n\
                 exec git http-backend\n",
                repos.display()
            ),
        )
        .unwrap();
        let status = Command::new("chmod")
            .args(["-R", "a+rX,u+x"])
            .arg(k.path("git"))
            .status();
        assert!(status.unwrap().success());
        std::fs::set_permissions(
            cgi.join("git"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let port = kiln_testkit::registry::free_port();
        let child = Command::new("python3")
            .current_dir(k.path("git/srv"))
            .args([
                "-m",
                "http.server",
                "--cgi",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Some(GitServer { child, port })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/git/r.git", self.port)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn git_sources_and_git_contexts() {
    let Some(k) = world() else { return };
    let Some(server) = GitServer::start(&k) else {
        return;
    };
    let url = server.url();
    k.write(
        "ctx/Dockerfile",
        format!("FROM busybox\nADD {url}#v1:sub /tagged/\nADD --keep-git-dir {url} /whole/\n"),
    );
    k.ok(&["build", "ctx", "-t", "git-add", "--progress=quiet"]);
    let tree = crate::support::image_tree(&k, "git-add");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("tagged/a.txt")).unwrap(),
        "one\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.path().join("whole/sub/a.txt")).unwrap(),
        "two\n"
    );
    assert!(
        tree.path().join("whole/.git").is_dir(),
        "--keep-git-dir keeps .git"
    );
    assert!(!tree.path().join("tagged/.git").exists());
    // The same commit again: cached.
    let again = run(k.cmd().args(["build", "ctx", "--progress=rawjson"]));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !stderr.contains("\"type\":\"started\",\"label\":\"[1/3]"),
        "{stderr}"
    );
    assert!(stderr.contains("\"type\":\"cached\""), "{stderr}");
    // A git repository as the build context, its Dockerfile inside.
    k.ok(&[
        "build",
        &format!("{url}#v1"),
        "-t",
        "git-ctx",
        "--progress=quiet",
    ]);
    let tree = crate::support::image_tree(&k, "git-ctx");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("ctx-a.txt")).unwrap(),
        "one\n"
    );
    // A ref that does not exist fails clearly.
    k.write(
        "ctx/Dockerfile",
        format!("FROM busybox\nADD {url}#nosuch /x/\n"),
    );
    let err = k.fails(&["build", "ctx", "--progress=quiet"]);
    assert!(err.contains("git ") && err.contains("nosuch"), "{err}");
    // Nothing is left in the store's temp dir.
    let leftovers: Vec<_> = std::fs::read_dir(k.root().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().starts_with("git-")),
        "{leftovers:?}"
    );
}

#[test]
fn ssh_key_files_are_served_as_an_agent() {
    let Some(k) = world() else { return };
    let has = |tool: &str| Command::new(tool).arg("-h").output().is_ok();
    if !has("ssh-keygen") || !has("ssh-add") {
        eprintln!(
            "skipped: ssh-keygen and ssh-add check the agent (apt-get install openssh-client)"
        );
        return;
    }
    let key = k.path("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && sleep 4\n",
    );
    let mut build = k
        .cmd()
        .args(["build", "--progress=quiet", "ctx", "--ssh"])
        .arg(format!("default={}", key.display()))
        .spawn()
        .unwrap();
    // While the step runs, the agent kiln serves lists the key and signs with it.
    let mut socket = None;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        // The agent's socket sits in a private directory of the store's temp dir.
        socket = std::fs::read_dir(k.root().join("tmp")).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join("agent.sock"))
                .find(|p| p.exists())
        });
        if socket.is_some() {
            break;
        }
    }
    let socket = socket.expect("kiln serves an agent socket while the build runs");
    let listed = Command::new("ssh-add")
        .arg("-L")
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    let key_part = public.split_whitespace().nth(1).unwrap();
    assert!(
        listed.contains(key_part),
        "agent lists {listed}, want {public}"
    );
    std::fs::write(k.path("data"), "signed by the agent").unwrap();
    let signed = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(key.with_extension("pub"))
        .arg(k.path("data"))
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    assert!(build.wait().unwrap().success());
    assert!(
        !socket.exists(),
        "the agent's socket is removed after the build"
    );
    // An encrypted key is refused with what to do.
    let locked = k.path("locked");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret-pass", "-f"])
        .arg(&locked)
        .status()
        .unwrap();
    let err = k.fails(&[
        "build",
        "--progress=quiet",
        "ctx",
        "--ssh",
        &format!("default={}", locked.display()),
    ]);
    assert!(
        err.contains("encrypted") && err.contains("ssh-add"),
        "{err}"
    );
}

/// `RUN --mount=type=ssh` gets a socket of kiln's own with the mount's uid, gid and mode
/// (BuildKit's default 0600 root), whose connections reach the agent: the host's `ssh-add`
/// (with its libraries) runs inside the step as an ordinary user and lists the key.
#[test]
fn ssh_mounts_forward_to_the_agent_with_their_owner_and_mode() {
    let Some(k) = world() else { return };
    let has = |tool: &str| Command::new(tool).arg("-h").output().is_ok();
    if !has("ssh-keygen") || !has("ssh-add") || !has("ldd") {
        eprintln!(
            "skipped: ssh-keygen, ssh-add and ldd are needed (apt-get install openssh-client)"
        );
        return;
    }
    let key = k.path("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-forward", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    // ssh-add and the libraries it loads, at their own paths under ctx/tools.
    let ssh_add = which("ssh-add");
    let ldd = Command::new("ldd").arg(&ssh_add).output().unwrap();
    let mut files = vec![ssh_add];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(path) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(std::path::PathBuf::from(path));
        }
    }
    for file in &files {
        let dest = k.path("ctx/tools").join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(std::fs::canonicalize(file).unwrap(), &dest).unwrap();
    }
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nCOPY tools/ /\nRUN mkdir -m 1777 /out\nUSER app\n\
         RUN --mount=type=ssh,uid=1000,gid=1000,mode=0660 \\\n\
         stat -c '%a %u:%g' \"$SSH_AUTH_SOCK\" > /out/owned && ssh-add -L > /out/listed\n\
         RUN --mount=type=ssh stat -c '%a %u:%g' \"$SSH_AUTH_SOCK\" > /out/default && \\\n\
         { ssh-add -L >/dev/null 2>&1; echo $? > /out/denied; }\n",
    );
    k.ok(&[
        "build",
        "--progress=plain",
        "ctx",
        "-o",
        &format!("type=local,dest={}", k.path("out").display()),
        "--ssh",
        &format!("default={}", key.display()),
    ]);
    let read = |name: &str| std::fs::read_to_string(k.path("out/out").join(name)).unwrap();
    assert_eq!(read("owned"), "660 1000:1000\n");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let key_part = public.split_whitespace().nth(1).unwrap();
    assert!(
        read("listed").contains(key_part),
        "listed {}",
        read("listed")
    );
    assert_eq!(read("default"), "600 0:0\n");
    // ssh-add's exit status 2: it could not reach the agent (the socket is root's).
    assert_eq!(read("denied"), "2\n");
    // A source= is refused, as BuildKit does.
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN --mount=type=ssh,source=/x true\n",
    );
    let err = k.fails(&["build", "--progress=plain", "ctx"]);
    assert!(err.contains("ssh does not support source"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
}

fn which(tool: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{tool} is on PATH"))
}

#[test]
fn nothing_escapes_through_names_links_or_mounts() {
    let Some(k) = world() else { return };
    let host = k.path("host");
    std::fs::create_dir_all(host.join("b/empty")).unwrap();
    std::fs::write(host.join("b/hostfile"), "host secret").unwrap();
    // A heredoc name is a file name, not a path.
    k.write(
        "ctx/Dockerfile",
        format!(
            "FROM busybox\nCOPY <<{}/pwned /x/\nhi\n{}/pwned\n",
            host.display(),
            host.display()
        ),
    );
    let err = k.fails(&["build", "--progress=quiet", "ctx"]);
    assert!(err.contains("cannot be a file name"), "{err}");
    assert!(!host.join("pwned").exists());
    // A link in a stage points inside the stage's tree, never at the host.
    k.write(
        "ctx/Dockerfile",
        format!(
            "FROM busybox AS s\nRUN ln -s {} /a\n\
             FROM busybox\nRUN --mount=type=bind,from=s,source=/a/b,target=/x cat /x/hostfile\n",
            host.display()
        ),
    );
    let err = k.fails(&["build", "--progress=plain", "ctx"]);
    assert!(!err.contains("host secret"), "{err}");
    // A step that swaps a mount target's parent for a link does not make kiln delete
    // host files when it cleans the mount stubs up.
    k.write(
        "ctx/Dockerfile",
        format!(
            "FROM busybox\nRUN --mount=type=tmpfs,target=/m/empty mv /m /m2 && ln -s {}/b /m\n",
            host.display()
        ),
    );
    k.ok(&["build", "--progress=quiet", "ctx"]);
    assert!(
        host.join("b/empty").is_dir(),
        "a host directory was removed"
    );
    assert!(host.join("b/hostfile").exists());
}

#[test]
fn locked_cache_mounts_do_not_deadlock_and_copy_from_follows_the_trees_links() {
    let Some(k) = world() else { return };
    let mut text = String::new();
    for i in 0..4 {
        text.push_str(&format!(
            "FROM busybox AS s{i}\nRUN --mount=type=cache,target=/c,sharing=locked echo {i} >> /c/log && sleep 1\n"
        ));
    }
    text.push_str(
        "FROM busybox AS libs\nRUN mkdir -p /usr/lib/x && echo so > /usr/lib/x/libfoo.so && ln -s usr/lib /lib\n\
         FROM busybox\nCOPY --from=s0 /etc/passwd /0\nCOPY --from=s1 /etc/passwd /1\n\
         COPY --from=s2 /etc/passwd /2\nCOPY --from=s3 /etc/passwd /3\n\
         COPY --from=libs /lib/x/libfoo.so /out/\nCOPY --from=libs /lib/x/*.so /glob/\n",
    );
    k.write("ctx/Dockerfile", &text);
    let mut child = k
        .cmd()
        .args(["build", "--progress=quiet", "ctx", "-t", "locked"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("four locked cache mounts deadlocked the build");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success());
    let tree = crate::support::image_tree(&k, "locked");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("out/libfoo.so")).unwrap(),
        "so\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.path().join("glob/libfoo.so")).unwrap(),
        "so\n"
    );
}
