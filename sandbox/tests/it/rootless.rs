//! Rootless mode: the sandbox run by an unprivileged user (through `setpriv`), in a user
//! namespace mapping that user to root and, when `/etc/subuid` grants one, its subordinate
//! range to ids 1 and up. `kilntest` has a range, `kilntest-norange` has none.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::time::Duration;

use kiln_sandbox::{ExtraMount, Mount, Network, Spec};

use crate::as_user::{self, ALONE, RANGED, Remote, User};
use crate::support::{Rootfs, processes_with, write};

pub(crate) const TESTS: &[crate::Test] = &[
    (
        "rootless_exit_code_and_output",
        rootless_exit_code_and_output,
    ),
    ("rootless_uid_map", rootless_uid_map),
    ("rootless_forced_as_root", rootless_forced_as_root),
    (
        "rootless_bind_rootfs_writes_land_in_the_dir",
        rootless_bind_rootfs_writes_land_in_the_dir,
    ),
    (
        "rootless_overlay_with_userxattr",
        rootless_overlay_with_userxattr,
    ),
    (
        "rootless_network_none_only_lo",
        rootless_network_none_only_lo,
    ),
    (
        "rootless_network_host_is_the_hosts",
        rootless_network_host_is_the_hosts,
    ),
    (
        "rootless_network_default_is_slirp_without_host_loopback",
        rootless_network_default_is_slirp_without_host_loopback,
    ),
    (
        "rootless_network_lab_default_none_host",
        rootless_network_lab_default_none_host,
    ),
    (
        "rootless_uid_1000_is_subuid_start_plus_999",
        rootless_uid_1000_is_subuid_start_plus_999,
    ),
    (
        "rootless_without_range_refuses_other_users",
        rootless_without_range_refuses_other_users,
    ),
    ("rootless_dev_sys_and_secrets", rootless_dev_sys_and_secrets),
    ("rootless_escapes_fail", rootless_escapes_fail),
    ("rootless_timeout_kills", rootless_timeout_kills),
];

/// A busybox rootfs owned by a test user, and a copy of this binary to run as them.
struct Env {
    rootfs: Rootfs,
    exe: PathBuf,
    user: User,
}

/// The environment for `name`, or `None` after printing why rootless cannot be tested.
fn env(name: &'static str) -> Option<Env> {
    let user = match as_user::user(name) {
        Ok(user) => user,
        Err(reason) => {
            eprint!("(skipped: {reason}) ");
            return None;
        }
    };
    let rootfs = Rootfs::new();
    let exe = as_user::copy_of_self(rootfs.dir.path());
    as_user::chown_tree(rootfs.dir.path(), &user);
    Some(Env { rootfs, exe, user })
}

impl Env {
    fn run(&self, spec: &Spec) -> Remote {
        as_user::run(&self.exe, Some(&self.user), spec)
    }

    /// Runs `sh -c script` on the bound rootfs, asserts exit 0, returns stdout.
    fn ok(&self, script: &str) -> String {
        self.ok_spec(&self.rootfs.sh(script))
    }

    fn ok_spec(&self, spec: &Spec) -> String {
        let out = self.run(spec);
        assert_eq!(
            out.code,
            Some(0),
            "{:?} as {}: {out:?}",
            spec.argv,
            self.user.name
        );
        out.stdout
    }

    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.rootfs.dir.path().join(name);
        fs::create_dir_all(&dir).expect("mkdir");
        as_user::chown_tree(&dir, &self.user);
        dir
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn rootless_exit_code_and_output() {
    for name in [RANGED, ALONE] {
        let Some(env) = env(name) else { return };
        let out = env.run(
            &env.rootfs
                .sh("echo hello; id -u; id -g; echo oops >&2; exit 3"),
        );
        assert_eq!(out.code, Some(3), "{name}: {out:?}");
        assert_eq!(out.stdout, "hello\n0\n0\n", "{name}");
        assert_eq!(out.stderr, "oops\n", "{name}");
        assert_eq!(env.ok("echo $$"), "1\n", "{name}: the command is PID 1");
    }
}

fn rootless_uid_map() {
    let Some(ranged) = env(RANGED) else { return };
    let (Some((uid_start, uid_count)), Some((gid_start, gid_count))) =
        (ranged.user.subuid, ranged.user.subgid)
    else {
        panic!("{RANGED} has no range: {:?}", ranged.user);
    };
    let out = ranged.ok("cat /proc/self/uid_map; echo --; cat /proc/self/gid_map");
    assert_eq!(
        lines(&out),
        [
            format!("0 {} 1", ranged.user.uid),
            format!("1 {uid_start} {uid_count}"),
            "--".to_owned(),
            format!("0 {} 1", ranged.user.gid),
            format!("1 {gid_start} {gid_count}"),
        ]
    );
    let Some(alone) = env(ALONE) else { return };
    let out = alone.ok("cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups");
    assert_eq!(
        lines(&out),
        [
            format!("0 {} 1", alone.user.uid),
            format!("0 {} 1", alone.user.gid),
            "deny".to_owned()
        ]
    );
}

fn rootless_forced_as_root() {
    // KILN_ROOTLESS=1 puts even root's sandbox in a user namespace (root has no range here
    // unless /etc/subuid grants one, so only the first line is certain).
    let rootfs = Rootfs::new();
    let exe = as_user::copy_of_self(rootfs.dir.path());
    let out = as_user::run(&exe, None, &rootfs.sh("cat /proc/self/uid_map; id -u"));
    assert_eq!(out.code, Some(0), "{out:?}");
    let got = lines(&out.stdout);
    assert_eq!(got.first().map(String::as_str), Some("0 0 1"), "{got:?}");
    assert_eq!(got.last().map(String::as_str), Some("0"), "{got:?}");
    assert!(
        !got.contains(&"0 0 4294967295".to_owned()),
        "not the host's identity map: {got:?}"
    );
}

fn rootless_bind_rootfs_writes_land_in_the_dir() {
    for name in [RANGED, ALONE] {
        let Some(env) = env(name) else { return };
        env.ok("echo data > /made; mkdir -p /a/b; touch /a/b/c; cat /made");
        let root = env.rootfs.path();
        assert_eq!(
            fs::read_to_string(root.join("made")).expect("made"),
            "data\n"
        );
        for path in ["made", "a/b/c"] {
            let meta = fs::metadata(root.join(path)).expect(path);
            assert_eq!(
                (meta.uid(), meta.gid()),
                (env.user.uid, env.user.gid),
                "{name}: {path} belongs to the user on the host"
            );
        }
    }
}

fn overlay(lowers: &[PathBuf], upper: &std::path::Path, work: &std::path::Path) -> Vec<Mount> {
    let lowers: Vec<String> = lowers
        .iter()
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    // The options the snapshotter passes; the sandbox adds userxattr and drops
    // redirect_dir=off in a user namespace.
    vec![Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: "/".into(),
        options: vec![
            format!("lowerdir={}", lowers.join(":")),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
            "redirect_dir=off".into(),
            "metacopy=off".into(),
        ],
    }]
}

fn rootless_overlay_with_userxattr() {
    for name in [RANGED, ALONE] {
        let Some(env) = env(name) else { return };
        let (upper, work) = (env.dir("upper"), env.dir("work"));
        let spec = Spec::new(
            overlay(&[env.rootfs.path()], &upper, &work),
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo new > /newfile; echo more >> /etc/passwd; rm /etc/group; \
                 ls /etc/group 2>/dev/null || echo gone"
                    .into(),
            ],
        );
        assert_eq!(env.ok_spec(&spec), "gone\n", "{name}");
        let meta = fs::metadata(upper.join("newfile")).expect("newfile in upper");
        assert_eq!((meta.uid(), meta.gid()), (env.user.uid, env.user.gid));
        assert_eq!(
            fs::read_to_string(upper.join("newfile")).expect("read"),
            "new\n"
        );
        assert!(
            fs::read_to_string(upper.join("etc/passwd"))
                .expect("passwd copied up")
                .ends_with("more\n")
        );
        let whiteout = fs::symlink_metadata(upper.join("etc/group")).expect("whiteout");
        assert!(
            whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
            "{name}: /etc/group is a 0:0 whiteout in the upper dir: {whiteout:?}"
        );
        let lower = env.rootfs.path();
        assert!(
            !lower.join("newfile").exists(),
            "the lower dir is untouched"
        );
        assert!(
            lower.join("etc/group").exists(),
            "the lower dir is untouched"
        );

        // Options past a page go through fsconfig; userxattr must ride along.
        let mut lowers = Vec::new();
        for i in 0..40 {
            let dir = env.dir(&format!("layers/{i:03}-{}", "x".repeat(100)));
            fs::write(dir.join(format!("layer-{i}")), "").expect("layer file");
            // Copy-up keeps the owner, so a lower file must belong to a mapped id.
            as_user::chown_tree(&dir, &env.user);
            lowers.push(dir);
        }
        lowers.push(env.rootfs.path());
        let (upper, work) = (env.dir("upper2"), env.dir("work2"));
        let mut spec = Spec::new(overlay(&lowers, &upper, &work), vec!["/bin/sh".into()]);
        spec.argv = vec![
            "/bin/sh".into(),
            "-c".into(),
            "ls / | grep -c layer-; touch /layer-7".into(),
        ];
        assert_eq!(env.ok_spec(&spec), "40\n", "{name}");
        assert!(upper.join("layer-7").exists());
    }
}

fn rootless_network_none_only_lo() {
    for name in [RANGED, ALONE] {
        let Some(env) = env(name) else { return };
        let mut spec = env.rootfs.sh(
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /sys/class/net/lo/flags; \
             echo hi | nc -l -p 5555 & sleep 0.2; nc 127.0.0.1 5555",
        );
        spec.network = Network::None;
        assert_eq!(env.ok_spec(&spec), "lo\n0x9\nhi\n", "{name}");
    }
}

fn rootless_network_host_is_the_hosts() {
    let Some(env) = env(RANGED) else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        std::io::Write::write_all(&mut conn, b"hello from the host\n").expect("write");
    });
    let mut spec = env.rootfs.sh(&format!("nc 127.0.0.1 {port} </dev/null"));
    spec.network = Network::Host;
    assert_eq!(env.ok_spec(&spec), "hello from the host\n");
    server.join().expect("server thread");
}

fn rootless_network_default_is_slirp_without_host_loopback() {
    use std::os::unix::fs::PermissionsExt;
    let tun = fs::metadata("/dev/net/tun").map(|m| m.permissions().mode() & 0o006);
    if tun.map_or(true, |mode| mode != 0o006) {
        eprint!("(skipped: /dev/net/tun is not read-write for other users; slirp4netns needs it) ");
        return;
    }
    for name in [RANGED, ALONE] {
        let Some(env) = env(name) else { return };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let out = env.ok(&format!(
            "ls /sys/class/net | tr '\\n' ' '; echo; ip -o -4 addr show tap0 | awk '{{print $4}}'; \
             for a in 127.0.0.1 10.0.2.2; do \
               if nc -w 2 $a {port} </dev/null; then echo reached; else echo refused; fi; \
             done"
        ));
        assert_eq!(out, "lo tap0 \n10.0.2.100/24\nrefused\nrefused\n", "{name}");
        assert!(
            listener.accept().is_err(),
            "{name}: reached the host's 127.0.0.1"
        );
        let left = processes_with("slirp4netns");
        assert!(
            left.is_empty(),
            "{name}: slirp4netns left running: {left:?}"
        );
    }
}

/// In the lab's host namespace, as an unprivileged user: the default network
/// (slirp4netns) reaches the outside but not the host's loopback, `none` reaches nothing,
/// `host` both.
fn rootless_network_lab_default_none_host() {
    use std::os::unix::fs::PermissionsExt;
    let tun = fs::metadata("/dev/net/tun").map(|m| m.permissions().mode() & 0o006);
    if tun.map_or(true, |mode| mode != 0o006) {
        eprint!("(skipped: /dev/net/tun is not read-write for other users; slirp4netns needs it) ");
        return;
    }
    let Some(env) = env(RANGED) else { return };
    let Some(lab) = crate::lab::lab() else { return };
    for (network, expected) in [
        (Network::Default, crate::lab::expect(true, false)),
        (Network::None, crate::lab::expect(false, false)),
        (Network::Host, crate::lab::expect(true, true)),
    ] {
        let mut spec = env.rootfs.sh(crate::lab::PROBE);
        spec.network = network;
        let out = as_user::run_in(
            &env.exe,
            as_user::Who::User(&env.user),
            &spec,
            Some(lab.host.pid()),
        );
        assert_eq!(out.code, Some(0), "{network:?}: {out:?}");
        assert_eq!(out.stdout, expected, "{network:?}: {out:?}");
    }
    let left = processes_with("slirp4netns");
    assert!(left.is_empty(), "slirp4netns left running: {left:?}");
}

fn rootless_uid_1000_is_subuid_start_plus_999() {
    let Some(env) = env(RANGED) else { return };
    let (Some((uid_start, _)), Some((gid_start, _))) = (env.user.subuid, env.user.subgid) else {
        panic!("{RANGED} has no range: {:?}", env.user);
    };
    // Root inside may give files to any mapped id, not to one outside the map.
    let out = env.ok(
        "mkdir -p /home/alice && chown 1000:1000 /home/alice && echo chowned; \
         chown 70000 /tmp 2>&1 | grep -c 'Invalid argument'",
    );
    assert_eq!(out, "chowned\n1\n");
    let mut spec = env
        .rootfs
        .sh("id; touch /home/alice/mine; touch /root/x 2>&1 | wc -l");
    spec.user = "alice".into();
    assert_eq!(
        env.ok_spec(&spec),
        "uid=1000(alice) gid=1000(alice) groups=10(wheel),1000(alice),2000(dev)\n1\n"
    );
    let meta = fs::metadata(env.rootfs.path().join("home/alice/mine")).expect("mine");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uid_start + 999, gid_start + 999),
        "uid 1000 inside is subuid start + 999 on the host"
    );
}

fn rootless_without_range_refuses_other_users() {
    let Some(env) = env(ALONE) else { return };
    let mut spec = env.rootfs.sh("id");
    spec.user = "alice".into();
    let out = env.run(&spec);
    let error = out.error.unwrap_or_default();
    assert!(
        out.code.is_none() && error.contains("uid 1000") && error.contains("/etc/subuid"),
        "{error}"
    );
    // Root inside is the only id: chown to anything else fails.
    assert_eq!(
        env.ok("chown 1 /tmp 2>&1 | grep -c 'Invalid argument'; id"),
        "1\nuid=0(root) gid=0(root) groups=0(root)\n"
    );
}

fn rootless_dev_sys_and_secrets() {
    for name in [RANGED, ALONE] {
        let Some(env) = env(name) else { return };
        // With the host's network, /sys is the host's bound with every mount in it
        // read-only; with an own network namespace (the default), a read-only sysfs.
        for network in [Network::Host, Network::Default] {
            let mut spec = env.rootfs.sh(
                "ls /dev | sort | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c; \
                 echo x > /dev/null && echo null-ok; ls /sys/class/net | grep -c '^lo$'; \
                 touch /sys/x 2>&1 | grep -c 'Read-only file system'; \
                 mkdir /sys/fs/cgroup/kiln-x 2>&1 | grep -c 'Read-only file system'; \
                 test -e /sys/fs/cgroup/kiln-x && echo made || echo not-made; \
                 awk '$5 ~ \"^/sys\" && $6 !~ \"^ro,\"' /proc/self/mountinfo | wc -l; \
                 cat /proc/kcore | wc -c",
            );
            spec.network = network;
            // The host's cgroupfs is under the host's /sys (read-only there); a fresh
            // sysfs has none, and nothing can be made in it either.
            let cgroupfs = if network == Network::Host { 1 } else { 0 };
            assert_eq!(
                env.ok_spec(&spec),
                format!(
                    "fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero \n\
                     4\nnull-ok\n1\n1\n{cgroupfs}\nnot-made\n0\n0\n"
                ),
                "{name} {network:?}"
            );
        }
    }
    let Some(env) = env(RANGED) else { return };
    let secret = env.rootfs.dir.path().join("token");
    write(&secret, "s3cret\n");
    as_user::chown_tree(&secret, &env.user);
    let mut spec = env
        .rootfs
        .sh("stat -c '%u %g %a' /run/secrets/token; cat /run/secrets/token");
    spec.user = "alice".into();
    spec.mounts = vec![ExtraMount::Secret {
        source: secret,
        target: "/run/secrets/token".into(),
        mode: Some(0o400),
        uid: Some(1000),
        gid: Some(1000),
    }];
    assert_eq!(env.ok_spec(&spec), "1000 1000 400\ns3cret\n");
}

fn rootless_escapes_fail() {
    let Some(env) = env(RANGED) else { return };
    let marker = env.rootfs.dir.path().join("host-marker");
    write(&marker, "host\n");
    let marker = marker.display();
    for (script, expected) in [
        ("mkdir -p /mnt; mount --bind / /mnt", "ermission denied"),
        ("mount -t tmpfs none /mnt", "ermission denied"),
        ("mount -t proc proc /mnt", "ermission denied"),
        ("unshare -U true", "not permitted"),
        ("unshare -m true", "not permitted"),
        ("umount /proc", "not permitted"),
        (
            "echo 1 > /proc/sys/kernel/ns_last_pid",
            "Read-only file system",
        ),
        (
            "if [ -e /proc/sysrq-trigger ]; then echo h > /proc/sysrq-trigger; \
             else echo Read-only file system >&2; false; fi",
            "Read-only file system",
        ),
        (
            &format!("cat /proc/1/root/../../..{marker}"),
            "No such file",
        ),
        (&format!("cat /../../..{marker}"), "No such file"),
    ] {
        let out = env.run(&env.rootfs.sh(script));
        assert!(
            out.code.is_some_and(|c| c != 0) && out.stderr.contains(expected),
            "{script}: expected a failure with {expected:?}: {out:?}"
        );
        assert!(!out.stdout.contains("host"), "{script}: {out:?}");
    }
}

fn rootless_timeout_kills() {
    let Some(env) = env(RANGED) else { return };
    let mut spec = env.rootfs.sh("sleep 876123");
    spec.user = "alice".into();
    spec.timeout = Some(Duration::from_millis(500));
    let out = env.run(&spec);
    let error = out.error.unwrap_or_default();
    assert!(error.contains("timed out"), "{error}");
    assert_eq!(processes_with("sleep 876123"), Vec::<String>::new());
}
