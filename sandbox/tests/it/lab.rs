//! A network lab made of two network namespaces the test owns, so a test can check
//! outbound access without sending anything beyond this machine:
//!
//! - `host` (where the sandbox runs): `lo`, a veth uplink 203.0.113.2/24 (TEST-NET-3)
//!   with the default route via 203.0.113.1, a web server on its own 127.0.0.1:8081, and
//!   `ip_forward` 0 (a new namespace inherits the init namespace's value);
//! - `outside`: 203.0.113.1 with a web server on 203.0.113.1:8080, and no route back to
//!   kiln's pool, so only NAT (or slirp4netns's sockets) gets an answer there.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A network namespace held open by a `sleep` the test owns (killed on drop).
pub(crate) struct Netns(Child);

impl Netns {
    fn new() -> Netns {
        let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .expect("unshare --net");
        let ns = format!("/proc/{}/ns/net", holder.id());
        let start = Instant::now();
        while std::fs::read_link(&ns).ok().is_none_or(|l| l == ours) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "unshare --net did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Netns(holder)
    }

    /// The holder's pid (`/proc/PID/ns/net`).
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// `nsenter --net=... PROGRAM`.
    pub(crate) fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .arg(program);
        cmd
    }

    /// `sh -c script` here; asserts success, returns stdout.
    pub(crate) fn sh(&self, script: &str) -> String {
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
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lab (see the module doc); `None` after saying why when a tool is missing.
pub(crate) struct Lab {
    pub(crate) host: Netns,
    _outside: Netns,
    _servers: Vec<Server>,
    _www: tempfile::TempDir,
}

/// What the probe script prints for each server it cannot reach.
pub(crate) const UNREACHABLE: &str = "unreachable";

/// A script fetching both servers' pages (or printing [`UNREACHABLE`]), one a line
/// (no `wget -T`: busybox 1.35's wget crashes with it).
pub(crate) const PROBE: &str = "wget -q -O- http://203.0.113.1:8080/ || echo unreachable; \
                                wget -q -O- http://127.0.0.1:8081/ || echo unreachable";

pub(crate) fn lab() -> Option<Lab> {
    for tool in ["ip", "nsenter", "unshare", "nft"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprint!("(skipped: {tool} is missing: iproute2, util-linux, nftables) ");
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
    let www = tempfile::tempdir().expect("temp dir");
    let serve = |ns: &Netns, addr: &str, name: &str, text: &str| {
        let dir = www.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("index.html"), text).expect("index.html");
        Server(
            ns.cmd("/bin/busybox")
                .args(["httpd", "-f", "-p", addr, "-h"])
                .arg(Path::new(&dir))
                .spawn()
                .expect("busybox httpd"),
        )
    };
    let servers = vec![
        serve(
            &outside,
            "203.0.113.1:8080",
            "outside",
            "from the outside\n",
        ),
        serve(
            &host,
            "127.0.0.1:8081",
            "loopback",
            "from the host's loopback\n",
        ),
    ];
    host.sh(
        "for i in $(seq 50); do /bin/busybox wget -q -O- http://203.0.113.1:8080/ >/dev/null && \
         /bin/busybox wget -q -O- http://127.0.0.1:8081/ >/dev/null && exit 0; sleep 0.1; done; exit 1",
    );
    Some(Lab {
        host,
        _outside: outside,
        _servers: servers,
        _www: www,
    })
}

/// The probe's expected output: which of the two servers answered.
pub(crate) fn expect(outside: bool, loopback: bool) -> String {
    format!(
        "{}\n{}\n",
        if outside {
            "from the outside"
        } else {
            UNREACHABLE
        },
        if loopback {
            "from the host's loopback"
        } else {
            UNREACHABLE
        }
    )
}

/// Runs `spec` through `exe` as root (not forced rootless) inside the lab's host
/// namespace (holder `netns`).
pub(crate) fn run_as_root(
    exe: &Path,
    spec: &kiln_sandbox::Spec,
    netns: u32,
) -> crate::as_user::Remote {
    crate::as_user::run_in(exe, crate::as_user::Who::Root, spec, Some(netns))
}
