//! Exit codes, output, pid 1, hostname, users, cwd and env, network, cancel and timeout.

use std::io::Write;
use std::time::{Duration, Instant};

use kiln_sandbox::{CancelHandle, Error, ExitStatus, Network, Stream};

use crate::support::{Rootfs, ok, processes_with, run, run_with};

pub(crate) const TESTS: &[crate::Test] = &[
    ("exit_codes", exit_codes),
    ("output_in_order_per_stream", output_in_order_per_stream),
    ("ten_megabytes_without_loss", ten_megabytes_without_loss),
    ("pid_1_is_the_command", pid_1_is_the_command),
    ("hostname_is_the_specs", hostname_is_the_specs),
    ("users_by_name_and_number", users_by_name_and_number),
    ("cwd_created_env_set", cwd_created_env_set),
    ("network_none_has_only_lo_up", network_none_has_only_lo_up),
    (
        "network_host_reaches_the_host",
        network_host_reaches_the_host,
    ),
    ("background_process_is_killed", background_process_is_killed),
    ("cancel_kills_sleep", cancel_kills_sleep),
    ("timeout_kills", timeout_kills),
];

fn exit_codes() {
    let rootfs = Rootfs::new();
    for (script, expected) in [
        ("exit 0", ExitStatus::Code(0)),
        ("exit 1", ExitStatus::Code(1)),
        ("exit 3", ExitStatus::Code(3)),
        ("no-such-command", ExitStatus::Code(127)),
        // A child killed by SIGKILL: the shell reports 128+9.
        ("sleep 100 & kill -9 $!; wait $!", ExitStatus::Code(137)),
    ] {
        assert_eq!(run(&rootfs.sh(script)).status, expected, "{script}");
    }
    // exec of a missing program as PID 1 itself.
    let mut spec = rootfs.sh("");
    spec.argv = vec!["no-such-binary".into()];
    let out = run(&spec);
    assert_eq!(out.status.code(), 127, "{out:?}");
    assert!(out.stderr.contains("no-such-binary"), "{out:?}");
}

fn output_in_order_per_stream() {
    let rootfs = Rootfs::new();
    let out =
        run(&rootfs.sh("for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; printf tail"));
    assert_eq!(out.stdout, "out1\nout2\nout3\nout4\nout5\ntail");
    assert_eq!(out.stderr, "err1\nerr2\nerr3\nerr4\nerr5\n");
    let lines: Vec<&[u8]> = out.out_lines.iter().map(Vec::as_slice).collect();
    assert_eq!(
        lines,
        [
            &b"out1\n"[..],
            b"out2\n",
            b"out3\n",
            b"out4\n",
            b"out5\n",
            b"tail"
        ]
    );
}

fn ten_megabytes_without_loss() {
    let rootfs = Rootfs::new();
    let mut counts = [0usize; 2];
    let mut lines = 0usize;
    let out = run_with(
        &rootfs.sh(
            "(yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 10485760 >&2) & \
             yes abcdefghijklmnopqrstuvwxyz0123456789 | head -c 10485760; wait",
        ),
        &CancelHandle::new(),
        &mut |stream, line| {
            counts[(stream == Stream::Stderr) as usize] += line.len();
            lines += 1;
        },
    );
    assert_eq!(out.status, ExitStatus::Code(0));
    assert_eq!(counts, [10 << 20, 10 << 20]);
    assert_eq!(out.stdout.len(), 10 << 20);
    assert!(
        out.stdout
            .lines()
            .all(|l| l == "abcdefghijklmnopqrstuvwxyz0123456789" || l.len() < 37)
    );
    assert!(lines > 500_000);
}

fn pid_1_is_the_command() {
    let rootfs = Rootfs::new();
    assert_eq!(ok(&rootfs.sh("echo $$")), "1\n");
    assert_eq!(
        ok(&rootfs.sh("cat /proc/1/cmdline | tr '\\0' ' '")),
        "/bin/sh -c cat /proc/1/cmdline | tr '\\0' ' ' "
    );
}

fn hostname_is_the_specs() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.sh("hostname; cat /etc/hostname; grep -c box-7 /etc/hosts");
    spec.hostname = "box-7".into();
    assert_eq!(ok(&spec), "box-7\nbox-7\n1\n");
}

fn users_by_name_and_number() {
    let rootfs = Rootfs::new();
    for (user, expected) in [
        ("", "uid=0(root) gid=0(root) groups=0(root)\n"),
        (
            "alice",
            "uid=1000(alice) gid=1000(alice) groups=10(wheel),1000(alice),2000(dev)\n",
        ),
        (
            "bob",
            "uid=1001(bob) gid=100(users) groups=100(users),2000(dev)\n",
        ),
        (
            "alice:users",
            "uid=1000(alice) gid=100(users) groups=100(users)\n",
        ),
        ("4242:4343", "uid=4242 gid=4343 groups=4343\n"),
    ] {
        let mut spec = rootfs.sh("id");
        spec.user = user.into();
        assert_eq!(ok(&spec), expected, "user {user:?}");
    }
    let mut spec = rootfs.sh("echo $HOME; touch /root/x");
    spec.user = "alice".into();
    let out = run(&spec);
    assert_eq!(out.stdout, "/home/alice\n");
    assert_ne!(
        out.status.code(),
        0,
        "alice must not write root's home: {out:?}"
    );
    let mut spec = rootfs.sh("id");
    spec.user = "nobody-here".into();
    let err =
        kiln_sandbox::run(&spec, &mut |_, _| {}, &CancelHandle::new()).expect_err("unknown user");
    assert!(
        matches!(err, Error::Setup(ref m) if m.contains("nobody-here")),
        "{err}"
    );
}

fn cwd_created_env_set() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.sh("pwd; echo $FOO; env | sort | grep -v '^PWD\\|^SHLVL'");
    spec.cwd = "/work/deep/dir".into();
    spec.env = vec!["FOO=bar baz".into(), "PATH=/bin".into()];
    assert_eq!(
        ok(&spec),
        "/work/deep/dir\nbar baz\nFOO=bar baz\nHOME=/root\nPATH=/bin\n"
    );
    assert!(rootfs.path().join("work/deep/dir").is_dir());
}

fn network_none_has_only_lo_up() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs
        .sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /sys/class/net/lo/flags");
    spec.network = Network::None;
    assert_eq!(ok(&spec), "lo\n0x9\n");
    let mut spec = rootfs.sh("echo hi | nc -l -p 5555 & sleep 0.2; nc 127.0.0.1 5555");
    spec.network = Network::None;
    assert_eq!(ok(&spec), "hi\n");
}

fn network_host_reaches_the_host() {
    let rootfs = Rootfs::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.write_all(b"hello from the host\n").expect("write");
    });
    let mut spec = rootfs.sh(&format!("nc 127.0.0.1 {port} </dev/null"));
    spec.network = Network::Host;
    assert_eq!(ok(&spec), "hello from the host\n");
    server.join().expect("server thread");
}

fn background_process_is_killed() {
    let rootfs = Rootfs::new();
    let out = ok(&rootfs.sh("sleep 987654 & echo started"));
    assert_eq!(out, "started\n");
    assert_eq!(processes_with("sleep 987654"), Vec::<String>::new());
}

fn cancel_kills_sleep() {
    let rootfs = Rootfs::new();
    let cancel = CancelHandle::new();
    let handle = cancel.clone();
    let spec = rootfs.sh("echo ready; exec sleep 1000");
    let start = Instant::now();
    let out = run_with(&spec, &cancel, &mut |_, line| {
        if line == b"ready\n" {
            handle.cancel();
        }
    });
    assert_eq!(out.status, ExitStatus::Signal(9));
    assert_eq!(out.status.code(), 137);
    assert!(cancel.is_cancelled());
    // Generous bound: the issue asks for 1 s; a loaded CI machine gets slack.
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(processes_with("sleep 1000"), Vec::<String>::new());

    // From another thread, as the scheduler does.
    let cancel = CancelHandle::new();
    let handle = cancel.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        handle.cancel();
    });
    let out = run_with(&rootfs.sh("sleep 1000"), &cancel, &mut |_, _| {});
    killer.join().expect("killer");
    assert_eq!(out.status, ExitStatus::Signal(9));
    assert_eq!(processes_with("sleep 1000"), Vec::<String>::new());

    // Cancelled before it starts.
    let cancel = CancelHandle::new();
    cancel.cancel();
    let out = run_with(&rootfs.sh("sleep 1000"), &cancel, &mut |_, _| {});
    assert_eq!(out.status, ExitStatus::Signal(9));
}

fn timeout_kills() {
    let rootfs = Rootfs::new();
    let mut spec = rootfs.sh("sleep 876543");
    spec.timeout = Some(Duration::from_millis(300));
    let err = kiln_sandbox::run(&spec, &mut |_, _| {}, &CancelHandle::new()).expect_err("timeout");
    assert!(matches!(err, Error::TimedOut(_)), "{err}");
    assert_eq!(processes_with("sleep 876543"), Vec::<String>::new());
}
