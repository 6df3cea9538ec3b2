//! `kiln build --explain` and `kiln explain`: why each step that ran was not taken from
//! the cache, compared with the last build of the same Dockerfile and target.

use crate::support::{Kiln, busybox_rootfs, run, world};

const DOCKERFILE: &str = "FROM busybox\n\
ARG V=1 API_TOKEN=none\n\
COPY a.txt b.txt /app/\n\
RUN --mount=type=secret,id=tok cat /app/a.txt /run/secrets/tok > /out && echo $V >> /out\n";

const SECRET: &str = "s3cr3t-value-never-shown-7f1c";

/// `kiln build --explain --progress=plain ARGS` in ctx: the `because:` lines by step.
fn explained(k: &Kiln, extra: &[&str]) -> Vec<String> {
    let secret = k.path("secret");
    let mut args = vec![
        "build".to_owned(),
        "ctx".to_owned(),
        "--explain".to_owned(),
        "--progress=plain".to_owned(),
        "--secret".to_owned(),
        format!("id=tok,src={}", secret.display()),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let out = run(k.cmd().args(&args));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains(SECRET),
        "the secret's value was shown:\n{stderr}"
    );
    // `#N [2/4] COPY ...` then `#N because: ...`: pair each reason with its step.
    let mut labels = std::collections::HashMap::new();
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let Some((n, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if let Some(reason) = rest.strip_prefix("because: ") {
            let label: &String = labels.get(n).expect("a reason follows its step");
            lines.push(format!("{label}: {reason}"));
        } else if rest.starts_with('[') {
            labels.insert(n.to_owned(), rest.to_owned());
        }
    }
    lines
}

#[test]
fn explain_says_why_each_step_ran() {
    let Some(k) = world() else { return };
    k.write("secret", SECRET);
    k.write("ctx/Dockerfile", DOCKERFILE);
    k.write("ctx/a.txt", "one\n");
    k.write("ctx/b.txt", "bee\n");
    let copy = "[2/3] COPY a.txt b.txt /app/";
    let run_step = "[3/3] RUN --mount=type=secret,id=tok cat /app/a.txt /run/secrets/tok > /out && echo $V >> /out";

    let first = explained(&k, &[]);
    assert!(
        first.contains(&format!("{copy}: first build of this step")),
        "{first:#?}"
    );
    assert!(
        first.contains(&format!("{run_step}: first build of this step")),
        "{first:#?}"
    );

    // Nothing changed: nothing ran, nothing to explain.
    assert_eq!(explained(&k, &[]), Vec::<String>::new());

    // One context file changed: the COPY names it, the RUN names the COPY.
    k.write("ctx/a.txt", "two\n");
    let lines = explained(&k, &[]);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with(&format!("{copy}: context file a.txt changed: ")),
        "{lines:#?}"
    );
    assert_eq!(
        lines[1],
        format!("{run_step}: an earlier step changed: {copy}")
    );
    // `kiln explain` says it again after the fact.
    let again = k.ok(&["explain"]);
    assert_eq!(again.lines().collect::<Vec<_>>(), lines);

    // A build arg changed: only the RUN runs, and says which, with both values.
    let lines = explained(&k, &["--build-arg", "V=2"]);
    assert_eq!(
        lines,
        [format!(
            "{run_step}: build arg or ENV V changed: \"1\" -> \"2\""
        )]
    );

    // A build arg whose name marks a secret: said to have changed, its values never
    // shown, nor kept in the store.
    let lines = explained(
        &k,
        &["--build-arg", "V=2", "--build-arg", "API_TOKEN=tok-81ab2f"],
    );
    assert_eq!(
        lines,
        [format!(
            "{run_step}: build arg or ENV API_TOKEN changed (its value is not shown: the name marks a secret)"
        )]
    );
    let lines = explained(
        &k,
        &["--build-arg", "V=2", "--build-arg", "API_TOKEN=tok-93cd4e"],
    );
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let store_bytes = [
        std::fs::read(k.root().join("cache.db")).unwrap_or_default(),
        std::fs::read(k.root().join("cache.db-wal")).unwrap_or_default(),
    ];
    for bytes in &store_bytes {
        for value in ["tok-81ab2f", "tok-93cd4e"] {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{value} is in the cache index"
            );
        }
    }

    // --no-cache-filter names the stage.
    let lines = explained(&k, &["--build-arg", "V=2", "--no-cache-filter", "stage-0"]);
    assert!(
        lines.contains(&format!("{run_step}: --no-cache-filter names its stage")),
        "{lines:#?}"
    );

    // The base image re-imported with other content: the FROM says it moved.
    let rootfs = busybox_rootfs(&k.path("rootfs2")).expect("busybox");
    std::fs::write(rootfs.join("etc/motd"), "changed base\n").unwrap();
    k.ok(&["import", rootfs.to_str().unwrap(), "busybox:latest"]);
    let lines = explained(&k, &["--build-arg", "V=2"]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[1/3] FROM") && l.contains("the base image moved: ")),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!(
            "{copy}: an earlier step changed: {}",
            lines[0].split(": ").next().unwrap()
        )),
        "{lines:#?}"
    );

    // The secret's value is in no record of the store.
    let db = std::fs::read(k.root().join("cache.db")).unwrap_or_default();
    let wal = std::fs::read(k.root().join("cache.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret's value is in the cache index"
        );
    }
}

#[test]
fn explain_is_refused_where_it_cannot_work() {
    let k = Kiln::new();
    // Before any build: says so.
    let err = k.fails(&["explain"]);
    assert!(err.contains("no build has run"), "{err}");
    // Through --host kiln's API does not carry it: refused, not ignored.
    k.write("ctx/Dockerfile", "FROM scratch\n");
    let err = k.fails(&[
        "--host",
        "unix:///nonexistent/kiln.sock",
        "build",
        "ctx",
        "--explain",
    ]);
    assert!(
        err.contains("--explain through --host is not supported yet"),
        "{err}"
    );
}
