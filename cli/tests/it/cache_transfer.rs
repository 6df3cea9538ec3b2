//! The build cache between machines (issue 15): `--cache-to type=local` on one store,
//! `--cache-from type=local` on another standing for a second CI runner, with the context
//! copied to another directory and owned by another user. Keys must travel (every step
//! CACHED, the same image id), a changed file reruns only what reads it, `mode=min`
//! holds only the image's own steps, a damaged cache is refused step by step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_testkit::registry::{
    REGISTRY_BIN, RegistryServer, ServerOptions, free_port, non_loopback_ip,
};

use crate::support::{Kiln, describe, image_tree, run, world};

const DOCKERFILE: &str = "\
FROM busybox AS build
WORKDIR /src
COPY a.txt .
RUN cat a.txt > out.txt && echo built >> out.txt
COPY b.txt .
RUN cat b.txt >> out.txt

FROM busybox
COPY --from=build /src/out.txt /out.txt
RUN cat /out.txt > /final.txt && echo final >> /final.txt
";

/// The labels of the steps, as progress shows them.
const BUILD_STEPS: [&str; 5] = [
    "[build 2/6] WORKDIR /src",
    "[build 3/6] COPY a.txt .",
    "[build 4/6] RUN cat a.txt > out.txt && echo built >> out.txt",
    "[build 5/6] COPY b.txt .",
    "[build 6/6] RUN cat b.txt >> out.txt",
];
const FINAL_STEPS: [&str; 2] = [
    "[stage-1 2/3] COPY --from=build /src/out.txt /out.txt",
    "[stage-1 3/3] RUN cat /out.txt > /final.txt && echo final >> /final.txt",
];

/// Stores standing for CI runners: A with busybox imported, and `n` copies of A's store
/// made before any build (busybox imported identically), where busybox also has another
/// name that sorts first, so that keys cannot lean on the names a store has.
fn runners(n: usize) -> Option<(Kiln, Vec<Kiln>)> {
    let a = world()?;
    let others = (0..n)
        .map(|_| {
            let other = Kiln::new();
            let copied = run(std::process::Command::new("cp")
                .arg("-a")
                .arg(a.root())
                .arg(other.root()));
            assert!(copied.status.success(), "{}", describe(&["cp -a"], &copied));
            other.ok(&["tag", "busybox:latest", "aaa/first:1"]);
            other
        })
        .collect();
    Some((a, others))
}

/// Writes the context at `dir` inside `k`'s directory.
fn context(k: &Kiln, dir: &str) -> PathBuf {
    k.write(&format!("{dir}/Dockerfile"), DOCKERFILE);
    k.write(&format!("{dir}/a.txt"), "alpha\n");
    k.write(&format!("{dir}/b.txt"), "beta\n");
    k.path(dir)
}

/// Copies a context to `dest` (another path), owned by another user, as a second
/// runner's checkout would be.
fn copy_context(from: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("mkdir");
    for entry in walkdir::WalkDir::new(from).min_depth(1).sort_by_file_name() {
        let entry = entry.expect("walk");
        let rel = entry.path().strip_prefix(from).expect("prefix");
        let target = dest.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
        std::os::unix::fs::lchown(&target, Some(4321), Some(4321)).expect("chown");
    }
}

/// A build's result: the image id and what happened to each step (`ran`, `CACHED` or
/// `CACHED (from SRC)`), read from the plain progress.
struct Built {
    id: String,
    steps: BTreeMap<String, String>,
    stderr: String,
}

fn build(k: &Kiln, ctx: &Path, extra: &[&str]) -> Built {
    let mut args = vec![
        "build",
        "--progress=plain",
        "-t",
        "result",
        ctx.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run(k.cmd().args(&args));
    assert!(out.status.success(), "{}", describe(&args, &out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut steps = BTreeMap::new();
    for line in stderr.lines() {
        let Some((n, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if rest.starts_with('[') && !labels.contains_key(n) {
            labels.insert(n.to_owned(), rest.to_owned());
        } else if let Some(label) = labels.get(n) {
            if rest.starts_with("CACHED") {
                steps.insert(label.clone(), rest.to_owned());
            } else if rest.starts_with("DONE") {
                steps.insert(label.clone(), "ran".to_owned());
            }
        }
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Built { id, steps, stderr }
}

/// Asserts what happened to each of `labels`.
fn expect(built: &Built, labels: &[&str], want: &str) {
    for label in labels {
        assert_eq!(
            built.steps.get(*label).map(String::as_str),
            Some(want),
            "step {label}\n--- stderr\n{}",
            built.stderr
        );
    }
}

/// `/final.txt` of the image the last build tagged.
fn final_txt(k: &Kiln) -> String {
    let tree = image_tree(k, "result");
    std::fs::read_to_string(tree.path().join("final.txt")).expect("final.txt in the image")
}

#[test]
fn a_cache_travels_between_two_stores() {
    let Some((a, mut others)) = runners(2) else {
        return;
    };
    let (c, b) = (others.pop().expect("C"), others.pop().expect("B"));
    let cache = a.path("cache");
    let to = format!("type=local,dest={},mode=max", cache.display());
    let ctx_a = context(&a, "ctx");
    let on_a = build(&a, &ctx_a, &["--cache-to", &to]);
    expect(&on_a, &BUILD_STEPS, "ran");
    expect(&on_a, &FINAL_STEPS, "ran");
    assert!(
        on_a.stderr.contains(&format!(
            "Exported the cache to {}: 7 steps",
            cache.display()
        )),
        "{}",
        on_a.stderr
    );
    assert!(
        on_a.stderr.contains(" MB (") || on_a.stderr.contains(" kB ("),
        "the export says its size: {}",
        on_a.stderr
    );
    // An OCI layout, tagged latest, whose manifest's config is kiln's record.
    assert!(cache.join("oci-layout").is_file());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.join("index.json")).expect("index.json"))
            .expect("index JSON");
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let manifest = read_blob(&cache, entry["digest"].as_str().expect("digest"));
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.kiln.cache.record.v1+json"
    );

    // B: another path, another owner, busybox with another first name.
    let ctx_b = b.path("elsewhere/checkout");
    copy_context(&ctx_a, &ctx_b);
    let from = format!("type=local,src={}", cache.display());
    let on_b = build(&b, &ctx_b, &["--cache-from", &from]);
    let hit = format!("CACHED (from {})", cache.display());
    expect(&on_b, &BUILD_STEPS, &hit);
    expect(&on_b, &FINAL_STEPS, &hit);
    assert_eq!(on_b.id, on_a.id, "the same image on both runners");
    assert!(
        on_b.stderr.contains(&format!(
            "Imported 7 steps from the cache {}",
            cache.display()
        )),
        "{}",
        on_b.stderr
    );
    assert_eq!(final_txt(&b), "alpha\nbuilt\nbeta\nfinal\n");

    // What B imported is B's own now: without --cache-from, all cached locally.
    let again = build(&b, &ctx_b, &[]);
    expect(&again, &BUILD_STEPS, "CACHED");
    expect(&again, &FINAL_STEPS, "CACHED");
    assert_eq!(again.id, on_a.id);

    // A third runner, one file changed: the steps before the COPY that reads it come
    // from A's cache, the rest run.
    std::fs::write(ctx_b.join("b.txt"), "gamma\n").expect("write");
    let changed = build(&c, &ctx_b, &["--cache-from", &from]);
    expect(&changed, &BUILD_STEPS[..3], &hit);
    expect(&changed, &BUILD_STEPS[3..], "ran");
    expect(&changed, &FINAL_STEPS, "ran");
    assert_eq!(final_txt(&c), "alpha\nbuilt\ngamma\nfinal\n");
}

fn read_blob(layout: &Path, digest: &str) -> serde_json::Value {
    let path = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(path).expect("blob")).expect("blob JSON")
}

/// The record of a cache layout (the config of the manifest tagged `latest`).
fn record(layout: &Path) -> serde_json::Value {
    let index = read_blob_path(&layout.join("index.json"));
    let manifest = read_blob(
        layout,
        index["manifests"][0]["digest"].as_str().expect("digest"),
    );
    read_blob(
        layout,
        manifest["config"]["digest"].as_str().expect("config"),
    )
}

fn read_blob_path(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("JSON")
}

/// The path of the layer blob the record gives the step `label`.
fn layer_of(layout: &Path, label: &str) -> PathBuf {
    let record = record(layout);
    let step = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == label)
        .unwrap_or_else(|| panic!("no step {label} in {record}"));
    let digest = step["result"]["layer"]["blob"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no layer for {label}: {step}"));
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

#[test]
fn mode_min_holds_only_the_image_stage() {
    let Some((a, mut others)) = runners(1) else {
        return;
    };
    let b = others.pop().expect("B");
    let (min, max) = (a.path("min"), a.path("max"));
    let ctx = context(&a, "ctx");
    let on_a = build(
        &a,
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=min", min.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max,tag=all", max.display()),
        ],
    );
    assert!(
        on_a.stderr
            .contains(&format!("Exported the cache to {}: 2 steps", min.display())),
        "{}",
        on_a.stderr
    );
    assert!(
        on_a.stderr.contains(&format!(
            "Exported the cache to {}:all: 7 steps",
            max.display()
        )),
        "{}",
        on_a.stderr
    );
    // Layers are shared blobs: the min cache's are among the max cache's.
    for label in FINAL_STEPS {
        let name = layer_of(&min, label);
        assert!(
            max.join("blobs/sha256")
                .join(name.file_name().expect("name"))
                .is_file()
        );
    }
    let ctx_b = b.path("other/ctx");
    copy_context(&ctx, &ctx_b);
    let from = format!("type=local,src={}", min.display());
    let on_b = build(&b, &ctx_b, &["--cache-from", &from]);
    expect(&on_b, &BUILD_STEPS, "ran");
    expect(
        &on_b,
        &FINAL_STEPS,
        &format!("CACHED (from {})", min.display()),
    );
    assert_eq!(on_b.id, on_a.id, "the image's own steps all came from A");
}

#[test]
fn a_damaged_cache_is_refused_step_by_step() {
    let Some((a, mut others)) = runners(2) else {
        return;
    };
    let (c, b) = (others.pop().expect("C"), others.pop().expect("B"));
    let cache = a.path("cache");
    let ctx = context(&a, "ctx");
    build(
        &a,
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ],
    );
    // One layer altered (same size), another gone.
    let altered = layer_of(&cache, BUILD_STEPS[2]);
    let mut bytes = std::fs::read(&altered).expect("read layer");
    let at = bytes.len() / 3;
    bytes[at] ^= 0x55;
    std::fs::set_permissions(
        &altered,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    std::fs::write(&altered, &bytes).expect("alter layer");
    std::fs::remove_file(layer_of(&cache, FINAL_STEPS[1])).expect("remove layer");

    let ctx_b = b.path("ctx");
    copy_context(&ctx, &ctx_b);
    let missing = b.path("no-cache-here");
    let on_b = build(
        &b,
        &ctx_b,
        &[
            "--cache-from",
            &format!("type=local,src={}", missing.display()),
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ],
    );
    let hit = format!("CACHED (from {})", cache.display());
    expect(&on_b, &BUILD_STEPS[..2], &hit);
    expect(&on_b, &BUILD_STEPS[2..3], "ran");
    expect(&on_b, &BUILD_STEPS[3..], &hit);
    expect(&on_b, &FINAL_STEPS[..1], &hit);
    expect(&on_b, &FINAL_STEPS[1..], "ran");
    let warned = |fragment: &str| {
        assert!(
            on_b.stderr.contains(fragment),
            "no {fragment:?} in\n{}",
            on_b.stderr
        );
    };
    warned(&format!(
        "--cache-from {}: no cache there yet",
        missing.display()
    ));
    warned(&format!(
        "warning: {}: not taken from the cache {}: blob sha256:",
        BUILD_STEPS[2],
        cache.display()
    ));
    warned("does not match its digest");
    warned(&format!(
        "warning: {}: not taken from the cache",
        FINAL_STEPS[1]
    ));
    warned("the cache does not have it");
    assert_eq!(final_txt(&b), "alpha\nbuilt\nbeta\nfinal\n");
    // The altered bytes never entered B's store.
    let name = altered.file_name().expect("name");
    assert!(!b.root().join("content/blobs/sha256").join(name).exists());

    // A tampered record: the whole cache is refused, every step runs.
    let record_path = {
        let index = read_blob_path(&cache.join("index.json"));
        let manifest = read_blob(
            &cache,
            index["manifests"][0]["digest"].as_str().expect("digest"),
        );
        cache.join("blobs/sha256").join(
            manifest["config"]["digest"]
                .as_str()
                .expect("config")
                .trim_start_matches("sha256:"),
        )
    };
    let text = std::fs::read_to_string(&record_path).expect("record");
    std::fs::set_permissions(
        &record_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    std::fs::write(
        &record_path,
        text.replace("alpha", "ALPHA")
            .replace("\"created\":", "\"created\": "),
    )
    .expect("tamper record");
    let ctx_c = c.path("ctx");
    copy_context(&ctx, &ctx_c);
    let on_c = build(
        &c,
        &ctx_c,
        &[
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ],
    );
    expect(&on_c, &BUILD_STEPS, "ran");
    expect(&on_c, &FINAL_STEPS, "ran");
    assert!(
        on_c.stderr.contains(&format!(
            "--cache-from {}: refused: blob sha256:",
            cache.display()
        )),
        "{}",
        on_c.stderr
    );
    assert_eq!(final_txt(&c), "alpha\nbuilt\nbeta\nfinal\n");
}

#[test]
fn bad_cache_values_are_errors() {
    let k = Kiln::new();
    k.write("ctx/Dockerfile", "FROM busybox\n");
    for (flag, value, fragment) in [
        (
            "--cache-to",
            "type=nope,dest=d",
            "unknown cache type \"nope\"; kiln supports type=local",
        ),
        ("--cache-to", "type=local", "type=local needs dest=DIR"),
        (
            "--cache-to",
            "type=local,dest=d,mode=most",
            "mode= is min or max",
        ),
        (
            "--cache-to",
            "type=registry",
            "type=registry needs ref=HOST/REPO:TAG",
        ),
        (
            "--cache-to",
            "type=registry,ref=Not A Ref",
            "is not a registry reference",
        ),
        (
            "--cache-to",
            "type=gha",
            "type=gha caches are not supported by kiln yet",
        ),
        (
            "--cache-to",
            "type=inline,mode=max",
            "type=inline holds only the image's own steps (mode=min)",
        ),
        (
            "--cache-from",
            "type=inline",
            "type=inline is for --cache-to",
        ),
        (
            "--cache-to",
            "type=local,dest=d,cache-mounts=true",
            "cache-mounts= is not supported by kiln yet",
        ),
        (
            "--cache-to",
            "type=local,dest=d,compression=zstd",
            "compression= is not supported by kiln yet",
        ),
        ("--cache-from", "type=local", "type=local needs src=DIR"),
        (
            "--cache-from",
            "type=registry,ref=localhost:5000/c:1,tag=x",
            "unknown attribute \"tag\"",
        ),
        (
            "--cache-from",
            "type=local,src=d,ignore-error=true",
            "ignore-error= changes nothing for type=local",
        ),
    ] {
        let err = k.fails(&["build", "ctx", flag, value]);
        assert!(
            err.contains(&flag[2..]) && err.contains(fragment),
            "{flag} {value}: {err}"
        );
    }
}

/// A `docker-registry` on 127.0.0.1, or `None` (with the reason printed) when absent.
fn registry() -> Option<RegistryServer> {
    if !Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipped: {REGISTRY_BIN} is absent (apt-get install docker-registry)");
        return None;
    }
    Some(RegistryServer::start(ServerOptions::default()))
}

/// `curl -fsS ARGS` against the test registry (a checker, not part of kiln).
fn curl(args: &[&str]) -> Vec<u8> {
    let out = run(std::process::Command::new("curl").arg("-fsS").args(args));
    assert!(out.status.success(), "{}", describe(args, &out));
    out.stdout
}

/// The cache manifest and record tagged `tag` in `repo` of `server`, read with curl.
fn registry_cache(
    server: &RegistryServer,
    repo: &str,
    tag: &str,
) -> (serde_json::Value, serde_json::Value) {
    let base = format!("http://{}/v2/{repo}", server.host());
    let manifest: serde_json::Value = serde_json::from_slice(&curl(&[
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("{base}/manifests/{tag}"),
    ]))
    .expect("manifest JSON");
    let digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let record =
        serde_json::from_slice(&curl(&[&format!("{base}/blobs/{digest}")])).expect("record JSON");
    (manifest, record)
}

#[test]
fn a_cache_travels_through_a_registry() {
    let Some(server) = registry() else { return };
    let Some((a, mut others)) = runners(2) else {
        return;
    };
    let (c, b) = (others.pop().expect("C"), others.pop().expect("B"));
    let reference = format!("{}/cache/app:buildcache", server.host());
    let to = format!("type=registry,ref={reference},mode=max");
    let ctx_a = context(&a, "ctx");
    let on_a = build(&a, &ctx_a, &["--cache-to", &to]);
    expect(&on_a, &BUILD_STEPS, "ran");
    expect(&on_a, &FINAL_STEPS, "ran");
    assert!(
        on_a.stderr.contains(&format!(
            "Exported the cache to {reference}: 7 steps, 7 layers"
        )),
        "{}",
        on_a.stderr
    );
    // docker-registry took an OCI manifest whose config is kiln's record.
    let (manifest, record) = registry_cache(&server, "cache/app", "buildcache");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.kiln.cache.record.v1+json"
    );
    assert_eq!(record["steps"].as_array().map(Vec::len), Some(7));

    // B: an empty store (busybox imported identically), the context elsewhere.
    let ctx_b = b.path("elsewhere/checkout");
    copy_context(&ctx_a, &ctx_b);
    let from = format!("type=registry,ref={reference}");
    let on_b = build(&b, &ctx_b, &["--cache-from", &from]);
    let hit = format!("CACHED (from {reference})");
    expect(&on_b, &BUILD_STEPS, &hit);
    expect(&on_b, &FINAL_STEPS, &hit);
    assert_eq!(on_b.id, on_a.id, "the same image on both runners");
    assert!(
        on_b.stderr
            .contains(&format!("Imported 7 steps from the cache {reference}")),
        "{}",
        on_b.stderr
    );
    assert_eq!(final_txt(&b), "alpha\nbuilt\nbeta\nfinal\n");

    // buildx's shorthand: a bare reference is type=registry,ref=REFERENCE.
    let ctx_c = c.path("ci/work");
    copy_context(&ctx_a, &ctx_c);
    let on_c = build(&c, &ctx_c, &["--cache-from", &reference]);
    expect(&on_c, &BUILD_STEPS, &hit);
    assert_eq!(on_c.id, on_a.id);

    // A second export uploads nothing: the registry has every blob (HEAD first).
    let again = build(&a, &ctx_a, &["--cache-to", &to]);
    expect(&again, &BUILD_STEPS, "CACHED");
    assert!(
        again.stderr.contains(&format!(
            "Exported the cache to {reference}: 7 steps, 7 layers"
        )) && again.stderr.contains("(0 B written)"),
        "{}",
        again.stderr
    );
}

/// `--cache-to type=inline`: the pushed image is its own cache (the record of its steps in
/// its config, `kiln.cache.v1`, its layers the image's as pushed, gzip); a runner with an
/// empty store and `--cache-from IMAGE` takes every step from it. An image built without
/// it is refused as a cache with a warning, and the build runs.
#[test]
fn an_inline_cache_travels_in_the_pushed_image() {
    let Some(server) = registry() else { return };
    let Some((a, mut others)) = runners(2) else {
        return;
    };
    let (c, b) = (others.pop().expect("C"), others.pop().expect("B"));
    let single = "FROM busybox\nWORKDIR /src\nCOPY a.txt .\n\
                  RUN cat a.txt > out.txt && echo built >> out.txt\n";
    let steps = [
        "[2/4] WORKDIR /src",
        "[3/4] COPY a.txt .",
        "[4/4] RUN cat a.txt > out.txt && echo built >> out.txt",
    ];
    let ctx_a = context(&a, "ctx");
    a.write("ctx/Dockerfile", single);
    let image = format!("{}/inline/app:1", server.host());
    let on_a = build(
        &a,
        &ctx_a,
        &[
            "--cache-to",
            "type=inline",
            "-o",
            &format!("type=registry,name={image}"),
        ],
    );
    expect(&on_a, &steps, "ran");
    assert!(
        on_a.stderr
            .contains("Exported the cache inline in the image: 3 steps"),
        "{}",
        on_a.stderr
    );
    // The pushed config carries the record; the layers are gzip, as any pushed image.
    let (manifest, config) = registry_cache(&server, "inline/app", "1");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert!(
        manifest["layers"][1]["mediaType"]
            .as_str()
            .is_some_and(|t| t.ends_with("+gzip")),
        "{manifest}"
    );
    assert!(config["kiln.cache.v1"].is_string(), "{config}");

    let ctx_b = b.path("elsewhere/checkout");
    copy_context(&ctx_a, &ctx_b);
    let on_b = build(&b, &ctx_b, &["--cache-from", &image]);
    expect(&on_b, &steps, &format!("CACHED (from {image})"));
    let tree = image_tree(&b, "result");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("src/out.txt")).expect("out.txt"),
        "alpha\nbuilt\n"
    );
    // A base image's inline cache does not pass to an image built on it.
    let on_b_config = crate::build_topics::inspect(&b, "result");
    assert!(
        on_b_config["Config"].get("kiln.cache.v1").is_none(),
        "{on_b_config}"
    );

    // An image without an inline cache: a warning, and every step runs.
    let plain = format!("{}/inline/plain:1", server.host());
    build(&a, &ctx_a, &["-o", &format!("type=registry,name={plain}")]);
    let ctx_c = c.path("ci/work");
    copy_context(&ctx_a, &ctx_c);
    let on_c = build(&c, &ctx_c, &["--cache-from", &plain]);
    expect(&on_c, &steps, "ran");
    assert!(
        on_c.stderr.contains("an image without kiln's inline cache"),
        "{}",
        on_c.stderr
    );
}

#[test]
fn an_unreachable_cache_registry() {
    let Some(k) = world() else { return };
    let ctx = context(&k, "ctx");
    // Nothing listens there.
    let reference = format!("127.0.0.1:{}/cache/app:c", free_port());
    let ctx = ctx.to_str().expect("utf-8 path");

    let from = format!("type=registry,ref={reference}");
    let err = k.fails(&["build", "--progress=plain", ctx, "--cache-from", &from]);
    assert!(
        err.contains(&format!("--cache-from {reference}: ")),
        "{err}"
    );
    assert!(
        !err.contains("DONE") && !err.contains("RUN cat"),
        "nothing runs before the error: {err}"
    );
    let ignored = format!("{from},ignore-error=true");
    let built = build(&k, Path::new(ctx), &["--cache-from", &ignored]);
    assert!(
        built
            .stderr
            .contains(&format!("--cache-from {reference}: "))
            && built
                .stderr
                .contains("ignore-error=true: the build runs without it"),
        "{}",
        built.stderr
    );

    let to = format!("type=registry,ref={reference}");
    let err = k.fails(&["build", "--progress=plain", ctx, "--cache-to", &to]);
    assert!(err.contains(&format!("--cache-to {reference}: ")), "{err}");
    let ignored = format!("{to},ignore-error=true");
    let built = build(&k, Path::new(ctx), &["--cache-to", &ignored]);
    assert!(
        built.stderr.contains(&format!("--cache-to {reference}: "))
            && built
                .stderr
                .contains("ignore-error=true: the build succeeds without it"),
        "{}",
        built.stderr
    );
}

#[test]
fn ignore_error_makes_a_failed_local_export_a_warning() {
    let Some(k) = world() else { return };
    let ctx = context(&k, "ctx");
    // A file where the layout's directory should be.
    let dest = k.write("not-a-dir", "x");
    let to = format!("type=local,dest={}", dest.display());
    let err = k.fails(&["build", ctx.to_str().expect("utf-8"), "--cache-to", &to]);
    assert!(
        err.contains(&format!("--cache-to {}: ", dest.display())),
        "{err}"
    );
    let built = build(
        &k,
        &ctx,
        &["--cache-to", &format!("{to},ignore-error=true")],
    );
    assert!(
        built
            .stderr
            .contains(&format!("--cache-to {}: ", dest.display()))
            && built
                .stderr
                .contains("ignore-error=true: the build succeeds without it"),
        "{}",
        built.stderr
    );
}

#[test]
fn a_registry_cache_missing_a_blob_is_refused_for_that_step() {
    let Some(server) = registry() else { return };
    let Some((a, mut others)) = runners(2) else {
        return;
    };
    let (fresh, b) = (others.pop().expect("C"), others.pop().expect("B"));
    let reference = format!("{}/cache/app:c", server.host());
    let ctx_a = context(&a, "ctx");
    build(
        &a,
        &ctx_a,
        &[
            "--cache-to",
            &format!("type=registry,ref={reference},mode=max"),
        ],
    );
    // A tag the registry does not have yet (a first CI run) is a warning.
    let ctx_b = b.path("ctx");
    copy_context(&ctx_a, &ctx_b);
    let missing = format!("{}/cache/app:nothing-yet", server.host());
    let first = build(&b, &ctx_b, &["--cache-from", &missing]);
    assert!(
        first
            .stderr
            .contains(&format!("--cache-from {missing}: no cache there yet")),
        "{}",
        first.stderr
    );

    // The record still names the layer of `[build 4/6]`, the registry no longer has it.
    let (_, record) = registry_cache(&server, "cache/app", "c");
    let step = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == BUILD_STEPS[2])
        .expect("the RUN's record");
    let digest = step["result"]["layer"]["blob"]["digest"]
        .as_str()
        .expect("its blob");
    curl(&[
        "-X",
        "DELETE",
        &format!("http://{}/v2/cache/app/blobs/{digest}", server.host()),
    ]);
    let ctx_f = fresh.path("ctx");
    copy_context(&ctx_a, &ctx_f);
    let on_f = build(&fresh, &ctx_f, &["--cache-from", &reference]);
    let hit = format!("CACHED (from {reference})");
    expect(&on_f, &BUILD_STEPS[..2], &hit);
    expect(&on_f, &BUILD_STEPS[2..3], "ran");
    expect(&on_f, &BUILD_STEPS[3..], &hit);
    assert!(
        on_f.stderr.contains(&format!(
            "{}: not taken from the cache {reference}: ",
            BUILD_STEPS[2]
        )),
        "{}",
        on_f.stderr
    );
    assert_eq!(final_txt(&fresh), "alpha\nbuilt\nbeta\nfinal\n");
}

#[test]
fn registry_insecure_allows_plain_http_to_a_host_that_is_not_loopback() {
    // A registry on a non-loopback address is reachable from the network: the suite's
    // servers bind to 127.0.0.1, so this one runs only when asked for.
    if std::env::var_os("KILN_TEST_EXPOSED_REGISTRY").is_none() {
        eprintln!(
            "skipped: set KILN_TEST_EXPOSED_REGISTRY=1 to run a registry on this machine's non-loopback address"
        );
        return;
    }
    let Some(ip) = non_loopback_ip() else {
        eprintln!("skipped: this machine has no address besides loopback");
        return;
    };
    if !Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipped: {REGISTRY_BIN} is absent (apt-get install docker-registry)");
        return;
    }
    let server = RegistryServer::start(ServerOptions {
        ip: Some(ip),
        ..ServerOptions::default()
    });
    let Some((a, mut others)) = runners(1) else {
        return;
    };
    let b = others.pop().expect("B");
    let reference = format!("{}/cache/app:c", server.host());
    let ctx_a = context(&a, "ctx");
    let ctx = ctx_a.to_str().expect("utf-8 path");
    // Plain HTTP to a host that is not loopback needs registry.insecure=true.
    let plain = format!("type=registry,ref={reference}");
    let to = format!("{plain},mode=max");
    let err = a.fails(&["build", ctx, "--cache-to", &to]);
    assert!(err.contains(&format!("--cache-to {reference}: ")), "{err}");
    let insecure = format!("{plain},registry.insecure=true");
    let on_a = build(
        &a,
        &ctx_a,
        &["--cache-to", &format!("{to},registry.insecure=true")],
    );
    assert!(
        on_a.stderr
            .contains(&format!("Exported the cache to {reference}: 7 steps")),
        "{}",
        on_a.stderr
    );
    let ctx_b = b.path("ctx");
    copy_context(&ctx_a, &ctx_b);
    let err = b.fails(&[
        "build",
        ctx_b.to_str().expect("utf-8"),
        "--cache-from",
        &plain,
    ]);
    assert!(
        err.contains(&format!("--cache-from {reference}: ")),
        "{err}"
    );
    let on_b = build(&b, &ctx_b, &["--cache-from", &insecure]);
    expect(&on_b, &BUILD_STEPS, &format!("CACHED (from {reference})"));
    assert_eq!(on_b.id, on_a.id);
}
