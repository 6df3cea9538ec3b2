//! Hostile Dockerfiles and flags against the binary's bounds (issue 17, items 9, 10,
//! 11, 15): each fails fast with `FILE:LINE:COL`, what and how to fix, never by
//! exhausting the stack or memory.

use crate::support::Kiln;

/// `ENV x=${a:-${a:-...}}` nested 20k deep through line continuations.
fn nested(depth: usize) -> String {
    let mut text = String::from("FROM scratch\nENV x=");
    for _ in 0..depth {
        text.push_str("${a:-\\\n");
    }
    text.push('v');
    text.push_str(&"}".repeat(depth));
    text.push('\n');
    text
}

#[test]
fn deep_nesting_fails_with_its_place_not_a_stack_overflow() {
    let k = Kiln::new();
    let file = k.write("Dockerfile", nested(20_000));
    let name = file.display().to_string();
    for cmd in ["parse", "check"] {
        let args: Vec<&str> = match cmd {
            "parse" => vec!["parse", "--json", &name],
            _ => vec!["check", "-f", &name, "."],
        };
        let err = k.fails(&args);
        assert!(err.starts_with(&format!("{name}:2:1: ")), "{cmd}: {err}");
        assert!(err.contains("nested more than 128 deep"), "{cmd}: {err}");
        assert!(
            err.contains("hint: nest ${...} less deeply"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn doubling_args_fail_the_check_at_the_line_that_overflows() {
    let k = Kiln::new();
    let mut text = String::from("FROM scratch\nARG a0=xxxxxxxxxxxxxxxx\n");
    for i in 1..=40 {
        text.push_str(&format!("ARG a{i}=${{a{}}}${{a{}}}\n", i - 1, i - 1));
    }
    let file = k.write("Dockerfile", &text);
    let name = file.display().to_string();
    let err = k.fails(&["check", "-f", &name, "."]);
    assert!(
        err.contains(&format!("{name}:19:1: ExpansionLimit: ")),
        "{err}"
    );
    assert!(err.contains("more than 1048576 bytes"), "{err}");
}

#[test]
fn devices_and_huge_files_are_refused_as_dockerfiles() {
    let k = Kiln::new();
    for device in ["/dev/zero", "/dev/urandom"] {
        let err = k.fails(&["parse", "--json", device]);
        assert!(
            err.contains(&format!(
                "the Dockerfile {device} is a character device, not a regular file"
            )),
            "{err}"
        );
        let err = k.fails(&["check", "-f", device, "."]);
        assert!(err.contains("not a regular file"), "{err}");
    }
    let big = k.write(
        "Dockerfile.big",
        format!(
            "FROM scratch\n#{}\n",
            "x".repeat(kiln_parser::MAX_DOCKERFILE_SIZE)
        ),
    );
    let err = k.fails(&["parse", "--json", big.to_str().expect("utf8")]);
    assert!(err.contains("larger than 16777216 bytes"), "{err}");
}

#[test]
fn invalid_utf8_is_placed_at_its_byte() {
    let k = Kiln::new();
    let file = k.write("Dockerfile", b"FROM scratch\nRUN echo caf\xe9\n");
    let name = file.display().to_string();
    let err = k.fails(&["parse", "--json", &name]);
    assert!(
        err.starts_with(&format!(
            "{name}:2:13: the Dockerfile is not UTF-8 text: byte 0xe9 at offset 25"
        )),
        "{err}"
    );
    assert!(err.contains("hint: save the file as UTF-8"), "{err}");
}

#[test]
fn nul_in_run_is_refused_at_parse_time() {
    let k = Kiln::new();
    let file = k.write("Dockerfile", "FROM scratch\nRUN echo a\0b\n");
    let name = file.display().to_string();
    let err = k.fails(&["parse", "--json", &name]);
    assert!(
        err.starts_with(&format!("{name}:2:11: RUN holds a NUL byte")),
        "{err}"
    );
}

#[test]
fn a_root_that_is_a_file_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("file");
    std::fs::write(&file, "x").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&file)
        .arg("images")
        .output()
        .expect("run kiln");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a directory; give the store's directory"),
        "{err}"
    );
    assert_eq!(
        err.matches("Not a directory").count(),
        0,
        "said once: {err}"
    );
}

#[test]
fn tags_that_are_not_references_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("write");
    for tag in ["../../x", "..", ".hidden", "x:../../y"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(dir.path().join("store"))
            .args(["build", "-t", tag])
            .arg(dir.path())
            .output()
            .expect("run kiln");
        assert!(!out.status.success(), "{tag} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("-t {tag}")), "{tag}: {err}");
    }
}
