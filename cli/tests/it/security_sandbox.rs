//! Issue 17, items 1 and 2: what a RUN step can reach of the host that started kiln.
//!
//! File descriptors: kiln is started with a directory, a regular file and a pipe open
//! (as a CI runner or a shell's `exec 7</etc` leaves them); the RUN sees none of them.
//!
//! Network: each test builds its own "host" network namespace (a veth uplink with a
//! TEST-NET-3 address and a default route into a second namespace, "the outside", which
//! holds a web server on 203.0.113.1) and runs `kiln build` inside it. Nothing leaves this
//! machine: both namespaces are made by the test and die with it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Kiln, describe, kiln_bin, world};

/// `kiln ARGS` started by `sh` with fd 6 a regular host file opened read-write, fd 7 the
/// host's `/etc`, fd 8 a host directory and fd 9 a pipe whose write end the test holds.
fn kiln_with_inherited_fds(
    k: &Kiln,
    file: &Path,
    dir: &Path,
    args: &[&str],
) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("exec 6<>\"$FILE\" 7</etc 8<\"$DIR\" 9<&0 0</dev/null; exec \"$KILN\" \"$@\"")
        .arg("sh")
        .arg("--root")
        .arg(k.root())
        .args(args)
        .current_dir(k.dir.path())
        .env("FILE", file)
        .env("DIR", dir)
        .env("KILN", kiln_bin())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start sh");
    let mut pipe = child.stdin.take().expect("stdin pipe");
    let _ = pipe.write_all(b"from the pipe\n");
    let out = child.wait_with_output().expect("wait for kiln");
    drop(pipe);
    out
}

#[test]
fn run_sees_no_inherited_file_descriptors() {
    let Some(k) = world() else { return };
    let file = k.write("host/secret.txt", "host secret\n");
    let dir = k.path("host/dir");
    std::fs::create_dir_all(&dir).expect("mkdir");
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\n\
         RUN ls /proc/self/fd | tr '\\n' ' ' > /fds; \
             (cat /proc/self/fd/6; head -1 /proc/self/fd/7/shadow; cat /proc/self/fd/9) > /got 2>&1; \
             echo x > /proc/self/fd/8/pwned 2>/dev/null; \
             echo x >> /proc/self/fd/6 2>/dev/null; true\n",
    );
    let args = [
        "build",
        "--progress=plain",
        "--network=none",
        "ctx",
        "-o",
        "type=local,dest=out",
    ];
    let out = kiln_with_inherited_fds(&k, &file, &dir, &args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let fds = std::fs::read_to_string(k.path("out/fds")).expect("read /fds");
    // ls's own directory fd is the only one past 2.
    assert_eq!(fds, "0 1 2 3 ", "the RUN saw inherited fds");
    let got = std::fs::read_to_string(k.path("out/got")).expect("read /got");
    assert!(
        !got.contains("host secret"),
        "read the inherited file: {got}"
    );
    assert!(!got.contains("root:"), "read the host's /etc/shadow: {got}");
    assert!(
        !got.contains("from the pipe"),
        "read the inherited pipe: {got}"
    );
    assert!(
        !dir.join("pwned").exists(),
        "wrote into the inherited host directory"
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "host secret\n",
        "wrote into the inherited host file"
    );
}

/// A network namespace held open by a `sleep` the test owns (killed on drop).
struct Netns {
    holder: std::process::Child,
}

impl Netns {
    fn new() -> Netns {
        let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .expect("unshare --net");
        let ns = format!("/proc/{}/ns/net", holder.id());
        let start = std::time::Instant::now();
        while std::fs::read_link(&ns).ok().is_none_or(|l| l == ours) {
            assert!(start.elapsed().as_secs() < 5, "unshare --net did not start");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Netns { holder }
    }

    fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `nsenter --net=... PROGRAM` in this namespace.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .arg(program);
        cmd
    }

    /// Runs `sh -c script` here and asserts success.
    fn sh(&self, script: &str) -> String {
        let out = self
            .cmd("sh")
            .args(["-c", script])
            .output()
            .expect("nsenter sh");
        assert!(
            out.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{}/ns/net", self.pid()))
            .expect("stat netns")
            .ino()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A server the test owns (killed on drop).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lab: `host` (where kiln runs: `lo`, a veth uplink 203.0.113.2/24 with the default
/// route via 203.0.113.1, a web server on its own 127.0.0.1:8081) and `outside` (203.0.113.1,
/// a web server on 203.0.113.1:8080, no route back to kiln's pool: only NAT gets there).
struct Lab {
    host: Netns,
    _outside: Netns,
    _servers: Vec<Server>,
}

fn lab(k: &Kiln) -> Option<Lab> {
    for tool in ["ip", "nsenter", "unshare", "nft"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("skipping: {tool} (iproute2, util-linux, nftables) is not installed");
            return None;
        }
    }
    let host = Netns::new();
    let outside = Netns::new();
    host.sh(&format!(
        "echo 0 > /proc/sys/net/ipv4/ip_forward && \
         ip link set lo up && ip link add kt-up type veth peer name kt-out netns {} && \
         ip addr add 203.0.113.2/24 dev kt-up && ip link set kt-up up && \
         ip route add default via 203.0.113.1",
        outside.pid()
    ));
    outside
        .sh("ip link set lo up && ip addr add 203.0.113.1/24 dev kt-out && ip link set kt-out up");
    let www = |name: &str, text: &str| {
        let dir = k.path(&format!("www-{name}"));
        std::fs::create_dir_all(&dir).expect("mkdir www");
        std::fs::write(dir.join("index.html"), text).expect("index.html");
        dir
    };
    let serve = |ns: &Netns, addr: &str, dir: &Path| {
        Server(
            ns.cmd("busybox")
                .args(["httpd", "-f", "-p", addr, "-h"])
                .arg(dir)
                .spawn()
                .expect("busybox httpd"),
        )
    };
    let servers = vec![
        serve(
            &outside,
            "203.0.113.1:8080",
            &www("outside", "from the outside\n"),
        ),
        serve(
            &host,
            "127.0.0.1:8081",
            &www("loopback", "from the host's loopback\n"),
        ),
    ];
    // Both answer before any build starts.
    host.sh(
        "for i in $(seq 50); do busybox wget -q -O- http://203.0.113.1:8080/ && \
             busybox wget -q -O- http://127.0.0.1:8081/ && exit 0; sleep 0.1; done; exit 1",
    );
    Some(Lab {
        host,
        _outside: outside,
        _servers: servers,
    })
}

const PROBE: &str = "FROM busybox\n\
    RUN (wget -q -O- http://203.0.113.1:8080/ || echo unreachable) > /outside; \
        (wget -q -O- http://127.0.0.1:8081/ || echo unreachable) > /loopback\n";

/// `kiln build` of [`PROBE`] inside the lab's host namespace, with `flags`.
fn probe(k: &Kiln, lab: &Lab, name: &str, flags: &[&str]) -> Result<(String, String), String> {
    k.write("ctx/Dockerfile", PROBE);
    let dest = k.path(&format!("out-{name}"));
    let mut cmd = lab.host.cmd(kiln_bin());
    cmd.current_dir(k.dir.path())
        .env("NO_COLOR", "1")
        .arg("--root")
        .arg(k.root())
        .args(["build", "--progress=plain", "--no-cache", "ctx", "-o"])
        .arg(format!("type=local,dest={}", dest.display()))
        .args(flags);
    let out = cmd.output().expect("start kiln");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let read = |f: &str| std::fs::read_to_string(dest.join(f)).expect("read a probe's result");
    Ok((read("outside"), read("loopback")))
}

/// What a finished build may not leave in the lab's host namespace, after waiting up to
/// 5 s for it to go (a sandbox's veth pair goes with its namespace, which the kernel
/// frees asynchronously).
fn leftovers(lab: &Lab) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let found = leftovers_now(lab);
        if found.is_empty() || start.elapsed().as_secs() >= 5 {
            return found;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn leftovers_now(lab: &Lab) -> Vec<String> {
    let mut found: Vec<String> = lab
        .host
        .sh("ip -o link show | awk -F': ' '{print $2}'")
        .lines()
        .filter(|l| l.starts_with("kiln-"))
        .map(|l| format!("link {l}"))
        .collect();
    let table = lab
        .host
        .cmd("nft")
        .args(["list", "table", "ip", "kiln"])
        .output();
    if table.is_ok_and(|o| o.status.success()) {
        found.push("nftables table ip kiln".into());
    }
    let prefix = format!("lease-{}-", lab.host.inode());
    for entry in std::fs::read_dir("/run/kiln/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            found.push(format!("lease {name}"));
        }
    }
    let forward = lab.host.sh("cat /proc/sys/net/ipv4/ip_forward");
    if forward.trim() != "0" {
        found.push(format!("ip_forward {}", forward.trim()));
    }
    found
}

#[test]
fn run_network_default_is_nat_without_the_hosts_loopback() {
    let Some(k) = world() else { return };
    let Some(lab) = lab(&k) else { return };
    let outside = "from the outside\n";
    let loopback = "from the host's loopback\n";
    let unreachable = "unreachable\n";

    let got = probe(&k, &lab, "default", &[]).expect("default network build");
    assert_eq!(got, (outside.into(), unreachable.into()), "default network");
    assert_eq!(
        leftovers(&lab),
        Vec::<String>::new(),
        "after the default network"
    );

    let got = probe(&k, &lab, "none", &["--network", "none"]).expect("--network none build");
    assert_eq!(
        got,
        (unreachable.into(), unreachable.into()),
        "--network none"
    );

    let err = probe(&k, &lab, "host-refused", &["--network", "host"]).expect_err("refused");
    assert!(err.contains("network.host"), "{err}");

    let got = probe(
        &k,
        &lab,
        "host",
        &["--network", "host", "--allow", "network.host"],
    )
    .expect("--network host build");
    assert_eq!(got, (outside.into(), loopback.into()), "--network host");
    assert_eq!(leftovers(&lab), Vec::<String>::new(), "after all builds");
}
