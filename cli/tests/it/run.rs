//! `kiln run` (and the interactive shells of `kiln build --on-error`) through the binary;
//! terminals driven through a pty the test opens (nix's `openpty`), no `expect`.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Kiln, describe, run, world};

/// A kiln process whose stdin, stdout and stderr are a pty's slave, and the master.
pub(crate) struct OnPty {
    child: Child,
    master: std::fs::File,
    output: Arc<Mutex<Vec<u8>>>,
}

impl OnPty {
    pub(crate) fn spawn(mut cmd: Command) -> OnPty {
        let size = nix::pty::Winsize {
            ws_row: 30,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the slave"));
        cmd.stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        let child = cmd.spawn().expect("start kiln");
        drop(slave);
        let master = std::fs::File::from(pty.master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup the master");
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        OnPty {
            child,
            master,
            output,
        }
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output contains `needle` (panics with the output after 30 s).
    pub(crate) fn wait_for(&mut self, needle: &str) {
        let start = Instant::now();
        while !self.text().contains(needle) {
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("no {needle:?} in the output:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn send(&mut self, text: &str) {
        self.master
            .write_all(text.as_bytes())
            .expect("write to the pty");
    }

    /// Waits for kiln to exit and returns its code.
    pub(crate) fn exit_code(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("kiln did not exit; output:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Nothing of a sandbox left: no mount under the store in the host's mount table, no
/// process whose environment holds `token`.
pub(crate) fn assert_no_leftovers(k: &Kiln, token: &str) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = k.root().display().to_string();
    assert!(
        !mountinfo.contains(&root),
        "a mount under the store is left:\n{mountinfo}"
    );
    let needle = token.as_bytes();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(environ) = std::fs::read(entry.path().join("environ")) {
            assert!(
                !environ.windows(needle.len()).any(|w| w == needle),
                "process {:?} of the sandbox is left",
                entry.file_name()
            );
        }
    }
}

fn token(name: &str) -> String {
    format!(
        "KILN_TEST_TOKEN={name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    )
}

#[test]
fn run_it_gives_a_pty_pid_1_and_the_exit_status() {
    let Some(k) = world() else { return };
    let token = token("it");
    let mut cmd = k.cmd();
    cmd.args(["run", "--rm", "-it", "-e", &token, "busybox", "sh"]);
    let mut pty = OnPty::spawn(cmd);
    pty.wait_for("# ");
    pty.send("tty; echo pid=$$; stty size; echo TERM=$TERM; sleep 30\n");
    pty.wait_for("TERM=xterm");
    // Ctrl-C reaches the foreground job inside (the shell, PID 1, survives it).
    std::thread::sleep(Duration::from_millis(300));
    pty.send("\x03");
    pty.wait_for("# ");
    pty.send("echo after=$?; exit 7\n");
    let code = pty.exit_code();
    let text = pty.text();
    assert_eq!(code, 7, "{text}");
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("pid=1"), "{text}");
    assert!(text.contains("30 100"), "the window size: {text}");
    assert!(text.contains("after=130"), "the sleep got SIGINT: {text}");
    assert_no_leftovers(&k, &token);
}

#[test]
fn run_passes_a_signal_death_as_128_plus_n() {
    let Some(k) = world() else { return };
    let token = token("sig");
    let mut child = k
        .cmd()
        .args([
            "run",
            "--rm",
            "-e",
            &token,
            "busybox",
            "sh",
            "-c",
            "echo up; sleep 60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 3];
    stdout.read_exact(&mut first).expect("read");
    // PID 1 of the sandbox: the process whose environment holds the token, child of
    // the helper.
    let needle = token.as_bytes();
    let pid1 = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
                && std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                    s.lines()
                        .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1"))
                })
        })
        .expect("the sandbox's PID 1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid1),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_leftovers(&k, &token);
}

#[test]
fn run_forwards_signals_to_the_command() {
    let Some(k) = world() else { return };
    let mut child = k
        .cmd()
        .args([
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-term; exit 5' TERM; echo up; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start kiln");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 3];
    stdout.read_exact(&mut first).expect("read");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(5));
}

/// Builds an image whose config has `entrypoint` and `cmd` lines and returns what
/// `kiln run IMAGE EXTRA...` prints.
fn run_with(k: &Kiln, lines: &str, extra: &[&str]) -> String {
    k.write("ctx/Dockerfile", format!("FROM busybox\n{lines}\n"));
    k.ok(&["build", "-q", "-t", "ep:latest", "ctx"]);
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(extra);
    let out = run(k.cmd().args(&args));
    assert!(out.status.success(), "{}", describe(&args, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_resolves_entrypoint_and_cmd_as_docker_run() {
    let Some(k) = world() else { return };
    // docker's table (docs "Understand how CMD and ENTRYPOINT interact"): the shell
    // form of ENTRYPOINT is /bin/sh -c, so the Cmd lands as $0, $1... of its script.
    let exec_exec = r#"ENTRYPOINT ["echo", "ep"]
CMD ["cmd", "arg"]"#;
    assert_eq!(run_with(&k, exec_exec, &["ep"]), "ep cmd arg\n");
    assert_eq!(run_with(&k, exec_exec, &["ep", "x", "y"]), "ep x y\n");
    assert_eq!(
        run_with(&k, exec_exec, &["--entrypoint", "echo", "ep"]),
        "\n",
        "--entrypoint drops the image's Cmd"
    );
    let exec_shell = r#"ENTRYPOINT ["echo", "ep"]
CMD echo shell"#;
    assert_eq!(
        run_with(&k, exec_shell, &["ep"]),
        "ep /bin/sh -c echo shell\n"
    );
    let shell_exec = r#"ENTRYPOINT echo ep "$0" "$@"
CMD ["cmd", "arg"]"#;
    assert_eq!(run_with(&k, shell_exec, &["ep"]), "ep cmd arg\n");
    let shell_shell = r#"ENTRYPOINT echo ep "$0"
CMD echo shell"#;
    assert_eq!(run_with(&k, shell_shell, &["ep"]), "ep /bin/sh\n");
    // No Entrypoint: the command given replaces the Cmd.
    assert_eq!(run_with(&k, "CMD [\"echo\", \"c\"]", &["ep"]), "c\n");
    assert_eq!(
        run_with(&k, "CMD [\"echo\", \"c\"]", &["ep", "echo", "d"]),
        "d\n"
    );
    // --entrypoint "" with no command: docker's "no command specified".
    let out = run(k.cmd().args(["run", "--rm", "--entrypoint", "", "ep"]));
    assert_eq!(out.status.code(), Some(125), "{}", describe(&["run"], &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no command specified"));
}

#[test]
fn run_flags_env_workdir_user_volume() {
    let Some(k) = world() else { return };
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nENV A=image B=image\nWORKDIR /srv\nUSER app\n",
    );
    k.ok(&["build", "-q", "-t", "cfg:latest", "ctx"]);
    let out = k.ok(&["run", "--rm", "cfg", "sh", "-c", "echo $A $B; pwd; id -u"]);
    assert_eq!(out, "image image\n/srv\n1000\n");
    let host = k.path("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("f"), "from the host\n").unwrap();
    let vol = format!("{}:/data", host.display());
    let vol_ro = format!("{}:/ro:ro", host.display());
    let out = k.ok(&[
        "run", "--rm", "-e", "B=flag", "-w", "/tmp", "-u", "0:10", "-v", &vol, "-v", &vol_ro,
        "cfg", "sh", "-c",
        "echo $A $B; pwd; id -u; id -g; cat /data/f; echo w > /data/new; echo x > /ro/x || echo ro-refused",
    ]);
    assert_eq!(out, "image flag\n/tmp\n0\n10\nfrom the host\nro-refused\n");
    // -i: the command reads kiln's stdin; without it, /dev/null.
    let mut child = k
        .cmd()
        .args(["run", "--rm", "-i", "cfg", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped in\n");
    let out = run(k
        .cmd()
        .args(["run", "--rm", "cfg", "cat"])
        .stdin(Stdio::piped()));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(std::fs::read_to_string(host.join("new")).unwrap(), "w\n");
}

#[test]
fn run_keeps_the_writable_layer_until_prune() {
    let Some(k) = world() else { return };
    let out = run(k
        .cmd()
        .args(["run", "busybox", "sh", "-c", "echo kept > /marker"]));
    assert!(out.status.success(), "{}", describe(&["run"], &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dir = stderr
        .split(['(', ')'])
        .nth(1)
        .unwrap_or_else(|| panic!("no kept layer printed: {stderr}"))
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(format!("{dir}/marker")).unwrap(),
        "kept\n"
    );
    k.ok(&["prune"]);
    assert!(!std::path::Path::new(&dir).exists(), "prune left {dir}");
    // --rm keeps nothing.
    let before = std::fs::read_dir(k.root().join("snapshots"))
        .unwrap()
        .count();
    k.ok(&["run", "--rm", "busybox", "true"]);
    let after = std::fs::read_dir(k.root().join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(before, after);
}

#[test]
fn run_refuses_what_a_container_runtime_does() {
    let k = Kiln::new();
    for (args, says) in [
        (
            &["run", "-p", "80:80", "busybox"][..],
            "does not publish ports",
        ),
        (&["run", "-d", "busybox"][..], "does not detach"),
        (
            &["run", "--restart", "always", "busybox"][..],
            "no restart policies",
        ),
        (
            &["run", "--network", "bridge2", "busybox"][..],
            "unknown --network",
        ),
        (&["run", "-w", "rel", "busybox"][..], "absolute path"),
        (
            &["run", "-v", "vol:/data", "busybox"][..],
            "no named volumes",
        ),
    ] {
        let out = run(k.cmd().args(args));
        assert_eq!(out.status.code(), Some(125), "{}", describe(args, &out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let help = k.ok(&["run", "--help"]);
    assert!(help.contains("not a container runtime"), "{help}");
    // -it needs a terminal on stdin.
    let out = run(k
        .cmd()
        .args(["run", "-it", "busybox", "sh"])
        .stdin(Stdio::null()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a terminal"));
}

/// A context whose last RUN, as user `app` (1000) with a cache mount, writes files and
/// fails with exit code 3; `token` is in the step's environment.
fn failing_context(k: &Kiln, token: &str) {
    k.write(
        "fail/Dockerfile",
        format!(
            "FROM busybox\nARG API_TOKEN\nRUN mkdir /work && chown app /work\nUSER app\nWORKDIR /work\n\
             ENV {token}\nRUN --mount=type=cache,target=/cache,uid=1000 \
             --mount=type=secret,id=tok,env=TOKSECRET --mount=type=secret,id=tok,target=/s \
             echo cached > /cache/c && echo left-by-run > /work/left && exit 3\n"
        ),
    );
}

#[test]
fn on_error_shell_opens_a_shell_in_the_failed_step() {
    let Some(k) = world() else { return };
    let token = token("shell");
    failing_context(&k, &token);
    let mut cmd = k.cmd();
    k.write("secret.txt", "s3cr3t-value");
    cmd.args([
        "build",
        "--progress",
        "plain",
        "--on-error=shell",
        "--secret",
        "id=tok,src=secret.txt",
        "fail",
    ]);
    let mut pty = OnPty::spawn(cmd);
    pty.wait_for("a shell in its sandbox");
    pty.wait_for("$ ");
    pty.send("cat /work/left; echo uid=$(id -u); cat /cache/c; tty; echo sec=$TOKSECRET; exit 0\n");
    let code = pty.exit_code();
    let text = pty.text();
    assert!(text.contains("left-by-run"), "{text}");
    assert!(text.contains("uid=1000"), "{text}");
    assert!(text.contains("cached"), "{text}");
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(
        text.contains("sec=s3cr3t-value"),
        "the step's secrets are there: {text}"
    );
    // The build ends with the original failure, whatever the shell's own status.
    assert!(text.contains("exit code: 3"), "{text}");
    assert_eq!(code, 3, "{text}");
    assert_no_leftovers(&k, &token);
}

#[test]
fn on_error_keep_then_debug_shell() {
    let Some(k) = world() else { return };
    let token = token("keep");
    failing_context(&k, &token);
    k.write("secret.txt", "s3cr3t-value");
    let out = run(k.cmd().args([
        "build",
        "--progress",
        "plain",
        "--on-error=keep",
        "--secret",
        "id=tok,src=secret.txt",
        "--build-arg",
        "API_TOKEN=tok-91ab",
        "--build-arg",
        "HTTP_PROXY=http://u:pw-77cd@proxy.invalid:3128",
        "fail",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let id = stderr
        .split("kiln debug shell ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no id printed: {stderr}"))
        .to_owned();
    assert_no_leftovers(&k, &token);
    // Nothing of the secret is kept.
    for entry in std::fs::read_dir(k.root().join("failed-steps"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        assert!(
            !text.contains("s3cr3t") && !text.contains("TOKSECRET="),
            "{text}"
        );
        // Nor a build arg whose name marks a secret, nor a proxy's credentials; and the
        // file is root's alone.
        assert!(
            !text.contains("tok-91ab") && !text.contains("pw-77cd"),
            "{text}"
        );
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&entry.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{}", entry.path().display());
    }
    let mut cmd = k.cmd();
    cmd.args(["debug", "shell", &id]);
    let mut pty = OnPty::spawn(cmd);
    pty.wait_for("$ ");
    pty.send("cat /work/left; echo uid=$(id -u); cat /cache/c; echo pwd=$(pwd); exit 5\n");
    let code = pty.exit_code();
    let text = pty.text();
    assert!(text.contains("left-by-run"), "{text}");
    assert!(text.contains("uid=1000"), "{text}");
    assert!(text.contains("cached"), "{text}");
    assert!(text.contains("pwd=/work"), "{text}");
    assert_eq!(code, 5, "{text}");
    assert_no_leftovers(&k, &token);
    // Without a terminal, the shell reads kiln's stdin.
    let out = run(k
        .cmd()
        .args(["debug", "shell", &id, "cat", "/work/left"])
        .stdin(Stdio::null()));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "left-by-run\n");
    // prune removes kept steps.
    k.ok(&["prune"]);
    let err = k.fails(&["debug", "shell", &id]);
    assert!(err.contains("no kept failed step"), "{err}");
    assert!(
        !k.root().join("failed-steps").exists()
            || std::fs::read_dir(k.root().join("failed-steps"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn on_error_refusals_come_before_the_build() {
    let k = Kiln::new();
    k.write("ctx/Dockerfile", "FROM busybox\nRUN false\n");
    let out = run(k
        .cmd()
        .args(["build", "--progress", "plain", "--on-error=shell", "ctx"])
        .stdin(Stdio::null()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--on-error=shell needs a terminal"),
        "{stderr}"
    );
    assert!(!stderr.contains("#1"), "the build started: {stderr}");
    let out = run(k.cmd().args([
        "--host",
        "unix:///nonexistent/kiln.sock",
        "build",
        "--on-error=keep",
        "ctx",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("does not work through --host"), "{stderr}");
    let err = k.fails(&["build", "--on-error=later", "ctx"]);
    assert!(
        err.contains("fail, shell, keep") || err.contains("possible values"),
        "{err}"
    );
}

/// A RUN step of a build started from a terminal has no controlling terminal: `/dev/tty`
/// names nothing, so an untrusted Dockerfile can neither read the user's keystrokes nor
/// type into their shell (runc does the same for BuildKit).
#[test]
fn a_run_step_cannot_open_the_users_terminal() {
    let Some(k) = world() else { return };
    k.write(
        "ttyctx/Dockerfile",
        "FROM busybox\nRUN if (exec 3<>/dev/tty) 2>/dev/null; then echo opened-$((1+1)); else echo refused-$((2+2)); fi\n",
    );
    let mut cmd = k.cmd();
    cmd.args(["build", "--progress", "plain", "--no-cache", "ttyctx"]);
    let mut pty = OnPty::spawn(cmd);
    let code = pty.exit_code();
    let text = pty.text();
    assert_eq!(code, 0, "{text}");
    // The command line is echoed too: its output is what is computed.
    assert!(text.contains("refused-4"), "{text}");
    assert!(!text.contains("opened-2"), "{text}");
}
