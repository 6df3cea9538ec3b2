//! buildah's conformance corpus (`../shared/conformance/buildah`, its README §4) built by
//! the real `kiln build`, each case checked against what BuildKit's rules give.
//!
//! A case is covered when `testdata/buildah/expected/<index>-<slug>.json` exists; every
//! other case of `cases.json` is listed, with the reason, in `testdata/buildah/SKIPPED.tsv`.
//! An expectation file holds:
//!
//! * `index`, `name`: the case in `cases.json` (both must match);
//! * `fails` (bool, optional): the build must fail, with `error` (any of these substrings,
//!   BuildKit's wording) in its error output; it must agree with the case's `shouldFailAt`;
//! * `config`: the image config's `config` object, compared exactly (the stand-in base's own
//!   keys plus what the Dockerfile sets);
//! * `files`: path -> content, or `{"type": "file"|"dir"|"symlink", "content", "target",
//!   "mode", "uid", "gid", "mtime", "nlink_group"}` (each key optional but `type`);
//!   `mtime` is seconds since the epoch, `@CORPUS@` standing for the context's fixed mtime;
//! * `absent`: paths that must not exist;
//! * `exact`: directories whose whole content (recursively) must be the `files` entries
//!   under them, nothing more;
//! * `@HOST_ARCH@` in the text stands for the host's architecture (amd64, arm64, ...);
//! * `note` (optional): how the expectation follows from BuildKit's source;
//! * `corpus_differs` (required when `fails` disagrees with the case's `shouldFailAt`, which
//!   buildah and Docker's classic builder decided): why BuildKit decides otherwise.
//!
//! The bases: `scratch`, and stand-ins for `mirror.gcr.io/busybox` and `mirror.gcr.io/alpine`
//! made from Debian's busybox-static, with the passwd/group files, `/etc/os-release` and
//! `/etc/nsswitch.conf` those images carry (fixed mtimes) and their configs (`PATH`, `CMD`,
//! and `ArgsEscaped`, which `kiln import --change CMD` sets as a Dockerfile CMD does).
//!
//! Cases in `testdata/buildah/KNOWN_FAILING.tsv` are expected to differ for now: their
//! differences are printed, and the test fails if one of them passes (so the list stays true).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

use crate::build_topics::{check_absent, check_files, describe_path, extract, inspect, pretty};
use crate::support::{Kiln, busybox_rootfs, conformance_dir, describe, is_root, run};

/// The fixed mtime the conformance test gives the context (README §4).
const CORPUS_MTIME: i64 = 1_485_449_953;
/// The mtime given to the stand-in bases' `/etc` files, so `touch -r` has a known source.
pub(crate) const BASE_FILE_MTIME: i64 = 1_700_000_000;
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// What stands in for an omitted script (`OMITTED.tsv`): a small executable shell script.
pub(crate) const SCRIPT_STANDIN: &str = "#!/bin/sh\nexit 0\n";
/// Threads building cases at once, each with its own store.
const THREADS: usize = 2;

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/buildah")
}

/// One entry of `cases.json`.
struct Case {
    index: u64,
    name: String,
    raw: Value,
}

impl Case {
    fn context_dir(&self) -> Option<&str> {
        self.raw.get("contextDir").and_then(Value::as_str)
    }
    fn dockerfile(&self) -> &str {
        self.raw
            .get("dockerfile")
            .and_then(Value::as_str)
            .unwrap_or("Dockerfile")
    }
}

fn load_cases(corpus: &Path) -> BTreeMap<u64, Case> {
    let text = std::fs::read_to_string(corpus.join("cases.json")).expect("read cases.json");
    let all: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    all.as_array()
        .expect("cases.json is a list")
        .iter()
        .map(|c| {
            let index = c["index"].as_u64().expect("case index");
            let name = c["name"].as_str().expect("case name").to_owned();
            (
                index,
                Case {
                    index,
                    name,
                    raw: c.clone(),
                },
            )
        })
        .collect()
}

/// The first column of each data row of a repository TSV (header row first).
fn tsv_rows(path: &Path) -> Vec<Vec<String>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Writes a stand-in base root filesystem: busybox-static plus the `/etc` files of `flavour`
/// (`busybox` or `alpine`), their mtimes fixed.
fn standin_rootfs(dir: &Path, flavour: &str) -> Option<PathBuf> {
    let root = busybox_rootfs(dir)?;
    let (passwd, group, extra): (&str, &str, &[(&str, &str)]) = match flavour {
        // What the busybox image's /etc/passwd and /etc/group name (uclibc/glibc variants).
        "busybox" => (
            "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
             bin:x:2:2:bin:/bin:/bin/false\nsys:x:3:3:sys:/dev:/bin/false\n\
             sync:x:4:100:sync:/bin:/bin/sync\nmail:x:8:8:mail:/var/spool/mail:/bin/false\n\
             www-data:x:33:33:www-data:/var/www:/bin/false\n\
             operator:x:37:37:Operator:/var:/bin/false\n\
             nobody:x:65534:65534:nobody:/home:/bin/false\n",
            "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\ndisk:x:6:\n\
             lp:x:7:\nmail:x:8:\nkmem:x:9:\nwheel:x:10:root\ncdrom:x:11:\ndialout:x:18:\n\
             floppy:x:19:\nvideo:x:28:\naudio:x:29:\ntape:x:32:\nwww-data:x:33:\n\
             operator:x:37:\nutmp:x:43:\nplugdev:x:46:\nstaff:x:50:\nlock:x:54:\n\
             netdev:x:82:\nusers:x:100:\nnobody:x:65534:\n",
            &[("etc/nsswitch.conf", "hosts: files dns\nnetworks: files\n")],
        ),
        // What the alpine image's /etc/passwd and /etc/group name (the first entries).
        "alpine" => (
            "root:x:0:0:root:/root:/bin/sh\nbin:x:1:1:bin:/bin:/sbin/nologin\n\
             daemon:x:2:2:daemon:/sbin:/sbin/nologin\nadm:x:3:4:adm:/var/adm:/sbin/nologin\n\
             lp:x:4:7:lp:/var/spool/lpd:/sbin/nologin\nsync:x:5:0:sync:/sbin:/bin/sync\n\
             nobody:x:65534:65534:nobody:/:/sbin/nologin\n",
            "root:x:0:root\nbin:x:1:root,bin,daemon\ndaemon:x:2:root,bin,daemon\n\
             sys:x:3:root,bin\nadm:x:4:root,daemon\ntty:x:5:\ndisk:x:6:root\nlp:x:7:lp\n\
             kmem:x:9:\nwheel:x:10:root\nnobody:x:65534:\n",
            &[
                (
                    "etc/os-release",
                    "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.0\n",
                ),
                ("etc/nsswitch.conf", "hosts: files dns\n"),
            ],
        ),
        other => panic!("no stand-in for {other}"),
    };
    std::fs::write(root.join("etc/passwd"), passwd).expect("write passwd");
    std::fs::write(root.join("etc/group"), group).expect("write group");
    for (path, content) in extra {
        std::fs::write(root.join(path), content).expect("write a stand-in file");
    }
    for path in ["etc/passwd", "etc/group"]
        .iter()
        .chain(extra.iter().map(|(p, _)| p))
    {
        set_mtime(&root.join(path), BASE_FILE_MTIME);
    }
    Some(root)
}

/// Sets the mtime (and atime) of `path` itself, symlinks included (`touch -h`).
fn set_mtime(path: &Path, secs: i64) {
    let out = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(path)
        .output()
        .expect("run touch");
    assert!(out.status.success(), "touch {}: {:?}", path.display(), out);
}

/// A store with the stand-in bases imported under the corpus's names.
fn standin_world() -> Option<Kiln> {
    let k = Kiln::new();
    for (flavour, name, cmd) in [
        ("busybox", "mirror.gcr.io/busybox:latest", r#"CMD ["sh"]"#),
        (
            "alpine",
            "mirror.gcr.io/alpine:latest",
            r#"CMD ["/bin/sh"]"#,
        ),
    ] {
        let rootfs = standin_rootfs(&k.path(&format!("rootfs-{flavour}")), flavour)?;
        k.ok(&[
            "import",
            rootfs.to_str().expect("utf8"),
            name,
            "-c",
            &format!("ENV {DEFAULT_PATH}"),
            "-c",
            cmd,
        ]);
        // The expectations start from this config: `--change CMD` sets ArgsEscaped as a
        // Dockerfile CMD does (dockerfile2llb convert.go dispatchCmd).
        let (_, args) = cmd.split_once(' ').expect("CMD args");
        let want = serde_json::json!({
            "Env": [DEFAULT_PATH],
            "Cmd": serde_json::from_str::<Value>(args).expect("CMD JSON"),
            "ArgsEscaped": true,
        });
        let got = inspect(&k, name)["Config"]["config"].clone();
        assert_eq!(got, want, "the stand-in {name}'s config");
    }
    Some(k)
}

/// Copies the case's context into `to`: modes normalised as a git checkout leaves them,
/// `SYMLINKS.tsv` links made, omitted scripts stood in for, the inline Dockerfile written,
/// and every mtime set to [`CORPUS_MTIME`]. Returns the Dockerfile's path.
fn prepare_context(corpus: &Path, case: &Case, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).expect("create the context dir");
    let testdata = corpus.join("testdata");
    let dockerfile = if let Some(dir) = case.context_dir() {
        let from = testdata.join(dir);
        copy_tree(&from, to);
        let rel_from = Path::new("testdata").join(dir);
        for row in tsv_rows(&corpus.join("SYMLINKS.tsv")) {
            if let Ok(rel) = Path::new(&row[0]).strip_prefix(&rel_from) {
                let link = to.join(rel);
                if let Some(parent) = link.parent() {
                    std::fs::create_dir_all(parent).expect("create a symlink's parent");
                }
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&row[1], &link).expect("make a context symlink");
            }
        }
        for row in tsv_rows(&corpus.join("OMITTED.tsv")) {
            let Ok(rel) = Path::new(&row[0]).strip_prefix(&rel_from) else {
                continue;
            };
            if row[3] == "script" {
                let dest = to.join(rel);
                std::fs::write(&dest, SCRIPT_STANDIN).expect("write a script stand-in");
                let mode = if row[2] == "100755" { 0o755 } else { 0o644 };
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
        }
        to.join(case.dockerfile())
    } else if case.raw.get("inline_dockerfile").is_some() {
        to.join("Dockerfile") // written below
    } else {
        let dest = to.join("Dockerfile");
        std::fs::copy(testdata.join(case.dockerfile()), &dest).expect("copy the Dockerfile");
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        dest
    };
    let dockerfile = if let Some(inline) = case.raw.get("inline_dockerfile").and_then(Value::as_str)
    {
        let dest = to.join("Dockerfile");
        std::fs::copy(corpus.join(inline), &dest).expect("copy the inline Dockerfile");
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        dest
    } else {
        dockerfile
    };
    if case.context_dir() == Some("mount-targets") {
        // The Go test compiles mount-targets/true.go (omitted) into `true`: a static program
        // that exits 0. busybox run under the name `true` is one.
        let dest = to.join("true");
        std::fs::copy("/bin/busybox", &dest).expect("copy busybox as true");
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for entry in walkdir::WalkDir::new(to).contents_first(true) {
        set_mtime(entry.expect("walk the context").path(), CORPUS_MTIME);
    }
    dockerfile
}

/// Copies a corpus folder (read-only files) with modes as a checkout gives them.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for entry in walkdir::WalkDir::new(from).min_depth(1) {
        let entry = entry.expect("walk the corpus");
        let rel = entry.path().strip_prefix(from).expect("prefix");
        let dest = to.join(rel);
        let meta = entry.path().symlink_metadata().expect("lstat");
        if meta.is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(entry.path()).expect("readlink");
            std::os::unix::fs::symlink(target, &dest).expect("symlink");
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

/// Whether `text` matches `pattern`, a `|`-separated list of literal alternatives (each
/// optionally in parentheses) — the only shape the expectations use.
fn matches_any(text: &str, alternatives: &[Value]) -> bool {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    alternatives
        .iter()
        .map(|a| a.as_str().expect("error alternatives are strings"))
        .any(|a| text.contains(a))
}

/// Builds one case in `k`'s store and returns its differences from the expectation.
fn run_case(k: &Kiln, corpus: &Path, case: &Case, expected: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    let work = k.path(&format!("case-{}", case.index));
    let context = work.join("context");
    let dockerfile = prepare_context(corpus, case, &context);
    let tag = format!("buildah-case-{}:latest", case.index);
    let mut args: Vec<String> = vec![
        "build".into(),
        context.display().to_string(),
        "-f".into(),
        dockerfile.display().to_string(),
        "-t".into(),
        tag.clone(),
        "--progress".into(),
        "plain".into(),
    ];
    if let Some(build_args) = case.raw.get("buildArgs").and_then(Value::as_object) {
        for (key, value) in build_args {
            args.push("--build-arg".into());
            args.push(format!("{key}={}", value.as_str().expect("build arg")));
        }
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(k.cmd().args(&argv));
    let must_fail = expected
        .get("fails")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if must_fail {
        if out.status.success() {
            failures.push(format!(
                "the build succeeded; BuildKit fails it\n{}",
                describe(&argv, &out)
            ));
        } else if let Some(alternatives) = expected.get("error").and_then(Value::as_array) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !matches_any(&stderr, alternatives) {
                failures.push(format!(
                    "the error does not say any of {alternatives:?}:\n{stderr}"
                ));
            }
        }
        return failures;
    }
    if !out.status.success() {
        failures.push(format!("the build failed\n{}", describe(&argv, &out)));
        return failures;
    }
    let image = inspect(k, &tag);
    let got = image["Config"]
        .get("config")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    if got != expected["config"] {
        failures.push(format!(
            "config differs\n--- expected\n{}\n--- got\n{}",
            pretty(&expected["config"]),
            pretty(&got)
        ));
    }
    let fs_root = work.join("image-fs");
    extract(k, &image, &fs_root);
    let files = check_files(&fs_root, expected, &mut failures);
    check_nlink_groups(&fs_root, &files, &mut failures);
    check_absent(&fs_root, expected, &mut failures);
    for dir in expected
        .get("exact")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let dir = dir.as_str().expect("exact entries are strings");
        let full = fs_root.join(dir.trim_start_matches('/'));
        let prefix = if dir == "/" {
            "/".to_owned()
        } else {
            format!("{}/", dir.trim_end_matches('/'))
        };
        for entry in walkdir::WalkDir::new(&full)
            .min_depth(1)
            .sort_by_file_name()
        {
            let Ok(entry) = entry else { continue };
            let rel = entry.path().strip_prefix(&fs_root).expect("prefix");
            let path = format!("/{}", rel.display());
            if path.starts_with(&prefix) && !files.contains_key(&path) {
                failures.push(format!(
                    "{path}: not expected under {dir}; got {}",
                    describe_path(entry.path())
                ));
            }
        }
    }
    failures
}

/// Entries sharing an `nlink_group` name must be hard links of one file (same inode in the
/// extracted tree); entries in different groups must not be.
fn check_nlink_groups(root: &Path, files: &BTreeMap<String, Value>, failures: &mut Vec<String>) {
    let mut groups: BTreeMap<String, BTreeSet<(u64, String)>> = BTreeMap::new();
    for (path, want) in files {
        let Some(group) = want.get("nlink_group").and_then(Value::as_str) else {
            continue;
        };
        let full = root.join(path.trim_start_matches('/'));
        if let Ok(meta) = full.symlink_metadata() {
            groups
                .entry(group.to_owned())
                .or_default()
                .insert((meta.ino(), path.clone()));
        }
    }
    for (group, members) in groups {
        let inodes: BTreeSet<u64> = members.iter().map(|(ino, _)| *ino).collect();
        if inodes.len() != 1 {
            failures.push(format!(
                "hard-link group {group}: {:?} are not one file",
                members.iter().map(|(_, p)| p).collect::<Vec<_>>()
            ));
        }
    }
}

/// The host's architecture as OCI names it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The outcome of one case: its index, name and differences (empty: it passed).
type Outcome = (u64, String, Vec<String>);

#[test]
fn buildah_corpus() {
    let Some(conformance) = conformance_dir() else {
        eprintln!("skipped: ../shared/conformance (the buildah corpus) is absent");
        return;
    };
    if !is_root("buildah_corpus: kiln build runs RUN steps in namespaces") {
        return;
    }
    let corpus = conformance.join("buildah");
    let cases = load_cases(&corpus);
    let repo = repo_dir();

    // Every case is either covered or skipped with a reason, not both.
    let mut expectations: Vec<(u64, Value)> = Vec::new();
    for entry in std::fs::read_dir(repo.join("expected")).expect("read testdata/buildah/expected") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path)
            .expect("read an expectation")
            .replace("@HOST_ARCH@", host_arch())
            .replace("\"@CORPUS@\"", &CORPUS_MTIME.to_string())
            .replace("\"@BASE@\"", &BASE_FILE_MTIME.to_string());
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let index = value["index"].as_u64().expect("expectation index");
        let case = cases
            .get(&index)
            .unwrap_or_else(|| panic!("{}: no case {index}", path.display()));
        assert_eq!(value["name"], case.name, "{}: name", path.display());
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            file_name,
            format!("{index:03}-{}.json", slug(&case.name)),
            "expectation file name"
        );
        let should_fail = case.raw.get("shouldFailAt").is_some();
        let fails = value.get("fails").and_then(Value::as_bool).unwrap_or(false);
        // The corpus's verdict comes from buildah and (mostly) Docker's classic builder;
        // where BuildKit's differs, the expectation says why.
        assert!(
            should_fail == fails || value.get("corpus_differs").is_some(),
            "{file_name}: `fails` disagrees with the case's shouldFailAt without a `corpus_differs`"
        );
        expectations.push((index, value));
    }
    expectations.sort_by_key(|(i, _)| *i);
    let skipped: BTreeMap<u64, String> = tsv_rows(&repo.join("SKIPPED.tsv"))
        .into_iter()
        .map(|row| {
            let index: u64 = row[0].parse().expect("SKIPPED.tsv index");
            assert_eq!(
                cases.get(&index).map(|c| c.name.as_str()),
                Some(row[1].as_str()),
                "SKIPPED.tsv row {index}: name"
            );
            assert!(
                row.get(2).is_some_and(|r| !r.trim().is_empty()),
                "SKIPPED.tsv row {index}: a reason"
            );
            (index, row[2].clone())
        })
        .collect();
    let covered: BTreeSet<u64> = expectations.iter().map(|(i, _)| *i).collect();
    for index in cases.keys() {
        assert!(
            covered.contains(index) != skipped.contains_key(index),
            "case {index} ({}) must be either in expected/ or in SKIPPED.tsv, exactly once",
            cases[index].name
        );
    }
    let known_failing: BTreeMap<u64, Vec<String>> = tsv_rows(&repo.join("KNOWN_FAILING.tsv"))
        .into_iter()
        .map(|row| {
            let index: u64 = row[0].parse().expect("KNOWN_FAILING.tsv index");
            assert!(
                covered.contains(&index),
                "KNOWN_FAILING.tsv lists case {index}, which has no expectation"
            );
            (index, row)
        })
        .collect();

    // The cases, shared out over a few threads, each with its own store.
    let mut shares: Vec<Vec<(u64, Value)>> = vec![Vec::new(); THREADS];
    for (n, item) in expectations.into_iter().enumerate() {
        shares[n % THREADS].push(item);
    }
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let corpus = &corpus;
                let cases = &cases;
                scope.spawn(move || {
                    let k = standin_world()?;
                    Some(
                        share
                            .into_iter()
                            .map(|(index, expected)| {
                                let case = &cases[&index];
                                let failures = run_case(&k, corpus, case, &expected);
                                (index, case.name.clone(), failures)
                            })
                            .collect::<Vec<Outcome>>(),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("a case thread panicked"))
            .flatten()
            .collect()
    });
    if outcomes.is_empty() {
        return; // no busybox: skipped, the reason printed
    }

    let mut problems = Vec::new();
    let mut still_failing = Vec::new();
    let mut passed = 0;
    for (index, name, failures) in &outcomes {
        match (known_failing.get(index), failures.is_empty()) {
            (None, true) => passed += 1,
            (None, false) => problems.push(format!(
                "case {index} ({name}): {} difference(s) from BuildKit:\n{}",
                failures.len(),
                failures.join("\n")
            )),
            (Some(row), true) => problems.push(format!(
                "case {index} ({name}) is listed in KNOWN_FAILING.tsv ({}) but now passes: \
                 remove it from the list",
                row.get(2).map_or("", String::as_str)
            )),
            (Some(row), false) => still_failing.push(format!(
                "KNOWN FAILING case {index} ({name}), class {}: {}\n  {}",
                row.get(2).map_or("?", String::as_str),
                row.get(3).map_or("", String::as_str),
                failures.join("\n  ")
            )),
        }
    }
    eprintln!(
        "buildah corpus: {passed} case(s) pass, {} known failing, {} skipped (SKIPPED.tsv)",
        still_failing.len(),
        skipped.len()
    );
    for report in &still_failing {
        eprintln!("{report}\n");
    }
    assert!(
        problems.is_empty(),
        "{} buildah corpus problem(s):\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}
