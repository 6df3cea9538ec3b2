//! What a command can reach (issue 17): inherited file descriptors, and the networks.
//!
//! The default network is checked here from the host's side without sending anything
//! beyond this machine: a listener on the host's 127.0.0.1 must stay out of reach, the
//! sandbox gets its own `eth0` with a /30 of kiln's pool, IPv6 is off on both ends of the
//! pair (no router advertisements from the sandbox to the host), and nothing (veth,
//! nftables table, lease, forwarding setting) is left once no sandbox runs — also after a
//! sandbox is killed with SIGKILL. Outbound NAT is checked end to end through the `kiln` binary
//! in a network namespace the test makes (`cli/tests/it/security_sandbox.rs`).

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_sandbox::{CancelHandle, ExitStatus, Network};

use crate::support::{Rootfs, ok, run, run_with};

pub(crate) const TESTS: &[crate::Test] = &[
    (
        "no_inherited_fds_reach_the_command",
        no_inherited_fds_reach_the_command,
    ),
    (
        "network_default_has_its_own_namespace_without_host_loopback",
        network_default_has_its_own_namespace_without_host_loopback,
    ),
    (
        "network_default_has_no_ipv6_on_either_end",
        network_default_has_no_ipv6_on_either_end,
    ),
    (
        "network_lab_default_is_nat_none_is_nothing_host_is_the_hosts",
        network_lab_default_is_nat_none_is_nothing_host_is_the_hosts,
    ),
    (
        "network_default_concurrent_runs_get_distinct_addresses",
        network_default_concurrent_runs_get_distinct_addresses,
    ),
    (
        "network_default_cleans_up_after_a_killed_run",
        network_default_cleans_up_after_a_killed_run,
    ),
];

fn no_inherited_fds_reach_the_command() {
    let rootfs = Rootfs::new();
    let file = rootfs.dir.path().join("host-file");
    std::fs::write(&file, "host secret\n").expect("write");
    // Opened without O_CLOEXEC, as a shell's `exec 7</etc` leaves them.
    let open = |path: &std::path::Path, flags| {
        nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()).expect("open")
    };
    let dir = open(
        rootfs.dir.path(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
    );
    let etc = open(
        std::path::Path::new("/etc"),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
    );
    let reg = open(&file, nix::fcntl::OFlag::O_RDWR);
    let (pipe_read, pipe_write) = nix::unistd::pipe().expect("pipe");
    for network in [Network::None, Network::Default] {
        let mut spec = rootfs.sh("ls /proc/self/fd | tr '\\n' ' '");
        spec.network = network;
        // ls's own directory fd is the only one past 2.
        assert_eq!(ok(&spec), "0 1 2 3 ", "{network:?}");
    }
    drop((dir, etc, reg, pipe_read, pipe_write));
}

/// The inode of this process's network namespace, as kiln names its leases.
fn netns() -> u64 {
    std::fs::metadata("/proc/self/ns/net")
        .expect("stat netns")
        .ino()
}

/// What a finished default-network run may not leave behind.
fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("kiln-") {
            found.push(format!("link {name}"));
        }
    }
    let prefix = format!("lease-{}-", netns());
    for entry in std::fs::read_dir("/run/kiln/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) || name == format!("ip_forward-{}", netns()) {
            found.push(format!("file {name}"));
        }
    }
    let table = Command::new("nft")
        .args(["list", "table", "ip", "kiln"])
        .output();
    if table.is_ok_and(|o| o.status.success()) {
        found.push("nftables table ip kiln".into());
    }
    found
}

/// Waits (a dying namespace takes its veth with it, asynchronously) for no leftovers.
fn assert_clean(what: &str) {
    let start = Instant::now();
    loop {
        let left = leftovers();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: left behind {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read ip_forward")
}

fn network_default_has_its_own_namespace_without_host_loopback() {
    let rootfs = Rootfs::new();
    // An earlier test's janitor may still be in its grace second, forwarding on until it
    // puts back what it found: wait for it, so this is the host's own setting.
    assert_clean("before a default-network run");
    let forward_before = ip_forward();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let spec = rootfs.sh(&format!(
        "ls /sys/class/net | tr '\\n' ' '; echo; ip -o -4 addr show eth0 | awk '{{print $4}}'; \
         ip route | grep default; \
         if nc -w 2 127.0.0.1 {port} </dev/null; then echo reached; else echo refused; fi; \
         gw=$(ip route | awk '/default/ {{print $3}}'); \
         if nc -w 2 $gw {port} </dev/null; then echo reached-gw; else echo refused-gw; fi; \
         grep -c '^nameserver 127' /etc/resolv.conf || true"
    ));
    let out = ok(&spec);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "eth0 lo ", "{out}");
    assert!(lines[1].ends_with("/30") && lines[1].contains('.'), "{out}");
    assert!(
        lines[2].starts_with("default via ") && lines[2].contains("dev eth0"),
        "{out}"
    );
    assert_eq!(&lines[3..], ["refused", "refused-gw", "0"], "{out}");
    assert!(
        listener.accept().is_err(),
        "the host's 127.0.0.1 listener was reached"
    );
    // The helper shares PID 1's mount namespace, pivoted: its cleanup must not have
    // written kiln's lease directory into the rootfs.
    assert!(
        !rootfs.path().join("run").exists(),
        "the run wrote /run into the rootfs"
    );
    assert_clean("after a default-network run");
    assert_eq!(ip_forward(), forward_before, "ip_forward not restored");
}

/// Neither end of the pair has IPv6: with it on, the sandbox's root (which has
/// `CAP_NET_RAW`) could send the host's end router advertisements and so give the host a
/// default route and an address through the sandbox.
fn network_default_has_no_ipv6_on_either_end() {
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        eprint!("(skipped: this kernel has no IPv6) ");
        return;
    }
    let rootfs = Rootfs::new();
    // The sandbox says its gateway (the host end's address) through the rootfs, then
    // waits, its pair alive, until the test has looked at the host's end.
    let spec = rootfs.sh(
        "ip route | awk '/default/ {print $3}' > /gw.tmp && mv /gw.tmp /gw; \
         cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6; \
         ip -6 addr show dev eth0 | grep -c inet6 || true; \
         i=0; while [ -e /gw ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done",
    );
    let sandbox = std::thread::spawn(move || ok(&spec));
    let gw_file = rootfs.path().join("gw");
    let start = Instant::now();
    let gw = loop {
        if let Ok(gw) = std::fs::read_to_string(&gw_file) {
            break gw.trim().to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no gateway said");
        std::thread::sleep(Duration::from_millis(20));
    };
    let addrs = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("ip addr");
    let addrs = String::from_utf8_lossy(&addrs.stdout).into_owned();
    let host_end = addrs
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(3).is_some_and(|a| a.starts_with(&format!("{gw}/"))))
        .and_then(|f| f.get(1).map(|n| (*n).to_owned()))
        .unwrap_or_else(|| panic!("no host link has {gw}: {addrs}"));
    let host_off =
        std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{host_end}/disable_ipv6"));
    std::fs::remove_file(&gw_file).expect("remove gw");
    let out = sandbox.join().expect("sandbox thread");
    assert_eq!(host_off.ok().as_deref(), Some("1\n"), "{host_end}");
    assert_eq!(out, "1\n0\n", "the sandbox's eth0");
    assert_clean("after a default-network run");
}

fn network_default_concurrent_runs_get_distinct_addresses() {
    let rootfs = Rootfs::new();
    let spec = rootfs.sh("ip -o -4 addr show eth0 | awk '{print $4}'; sleep 1");
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let spec = spec.clone();
            std::thread::spawn(move || ok(&spec))
        })
        .collect();
    let mut addrs: Vec<String> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    assert_clean("after concurrent runs");
}

fn network_default_cleans_up_after_a_killed_run() {
    let rootfs = Rootfs::new();
    let cancel = CancelHandle::new();
    let killer = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            // SIGKILL to the helper and PID 1: no cleanup code of kiln's runs.
            cancel.cancel();
        })
    };
    let out = run_with(&rootfs.sh("echo up; sleep 30"), &cancel, &mut |_, _| {});
    killer.join().expect("killer");
    assert_eq!(out.status, ExitStatus::Signal(9), "{out:?}");
    // The next run reuses or sweeps the dead run's lease and takes the table down.
    let again = run(&rootfs.sh("ip -o -4 addr show eth0 | wc -l"));
    assert_eq!(again.stdout, "1\n", "{again:?}");
    assert_clean("after a killed run and a clean one");
}

/// In the lab's host namespace, as root: the default network reaches the outside through
/// NAT but not the host's loopback, `none` reaches nothing, `host` both; and nothing is
/// left in that namespace afterwards.
fn network_lab_default_is_nat_none_is_nothing_host_is_the_hosts() {
    let Some(lab) = crate::lab::lab() else { return };
    let rootfs = Rootfs::new();
    let exe = crate::as_user::copy_of_self(rootfs.dir.path());
    for (network, expected) in [
        (Network::Default, crate::lab::expect(true, false)),
        (Network::None, crate::lab::expect(false, false)),
        (Network::Host, crate::lab::expect(true, true)),
    ] {
        let mut spec = rootfs.sh(crate::lab::PROBE);
        spec.network = network;
        let out = crate::lab::run_as_root(&exe, &spec, lab.host.pid());
        assert_eq!(out.code, Some(0), "{network:?}: {out:?}");
        assert_eq!(out.stdout, expected, "{network:?}: {out:?}");
    }
    // The pair goes with the sandbox's namespace, which the kernel frees asynchronously;
    // the janitor takes the table down a moment after the last sandbox.
    let inode = std::fs::metadata(format!("/proc/{}/ns/net", lab.host.pid()))
        .expect("stat")
        .ino();
    let left = || {
        let mut found = Vec::new();
        if lab
            .host
            .sh("ip -o link show | grep -c 'kiln-' || true")
            .trim()
            != "0"
        {
            found.push("veth".to_owned());
        }
        let table = lab
            .host
            .cmd("nft")
            .args(["list", "table", "ip", "kiln"])
            .output();
        if table.is_ok_and(|o| o.status.success()) {
            found.push("nftables table".to_owned());
        }
        if lab.host.sh("cat /proc/sys/net/ipv4/ip_forward") != "0\n" {
            found.push("ip_forward on".to_owned());
        }
        for entry in std::fs::read_dir("/run/kiln/net")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(&format!("-{inode}")) {
                found.push(name);
            }
        }
        found
    };
    let start = Instant::now();
    loop {
        let found = left();
        if found.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "left in the lab: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
