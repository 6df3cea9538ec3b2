//! The sandbox's network, as data first: [`NetPlan`] says which stack a run gets,
//! [`veth_steps`] the links, addresses and routes of a root run, [`nft::ruleset`] its NAT
//! and filter rules, [`slirp_args`] the user-mode stack of a rootless run, and
//! [`resolv_conf`] the DNS configuration the command sees. [`root`] and [`slirp`]
//! perform them.
//!
//! | `Network` | root                                   | rootless                        |
//! |-----------|----------------------------------------|---------------------------------|
//! | `Default` | own netns, veth pair + NAT (nftables)  | own netns, `slirp4netns`        |
//! | `None`    | own netns, `lo` only                   | own netns, `lo` only            |
//! | `Host`    | the host's netns                       | the host's netns                |
//!
//! `Default` is what `docker build` gives: outbound access, no view of the host's
//! loopback. Root: a veth pair per sandbox (`kiln-N` on the host, `eth0` inside) with a
//! /30 from a private pool that overlaps none of the host's routes, masqueraded by an
//! nftables table kiln owns (`ip kiln`, see [`nft`]), IPv4 forwarding on as Docker sets it,
//! IPv6 off on both ends (see [`LinkStep::NoIpv6`]).
//! Rootless: `slirp4netns --disable-host-loopback`, because its `--exit-fd` ties its
//! life to the run's (it ends when kiln does, even after a `kill -9`), it can be told to
//! forward nothing to the host's loopback (also not through its DNS proxy:
//! `--disable-dns`), and it sandboxes itself (`--enable-sandbox --enable-seccomp`);
//! `pasta`'s defaults forward the host's loopback ports into the namespace (`-T auto`).

pub mod netlink;
pub mod nft;
pub(crate) mod root;
pub(crate) mod slirp;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::Network;

/// Which network stack one run gets (decided by the caller, performed by the helper).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetPlan {
    /// The host's network namespace.
    Host,
    /// An own network namespace with only `lo`, up.
    Loopback,
    /// An own network namespace with a veth pair to the host and NAT (root).
    Veth,
    /// An own network namespace connected by `slirp4netns` (rootless).
    Slirp {
        /// The `slirp4netns` binary.
        exe: PathBuf,
    },
}

/// The Debian package (and program) the rootless default network needs.
pub const SLIRP4NETNS: &str = "slirp4netns";

impl NetPlan {
    /// The plan for `network`, rootless or not; `find` looks a program up in `PATH`.
    /// Rootless `Default` without `slirp4netns` is an error naming the package.
    pub fn new(
        network: Network,
        rootless: bool,
        find: impl Fn(&str) -> Option<PathBuf>,
    ) -> Result<NetPlan, String> {
        Ok(match (network, rootless) {
            (Network::Host, _) => NetPlan::Host,
            (Network::None, _) => NetPlan::Loopback,
            (Network::Default, false) => NetPlan::Veth,
            (Network::Default, true) => match find(SLIRP4NETNS) {
                Some(exe) => NetPlan::Slirp { exe },
                None => {
                    return Err(format!(
                        "the rootless sandbox's default network needs {SLIRP4NETNS} in PATH: \
                         install it (Debian package {SLIRP4NETNS}), or build with \
                         --network none (no network) or --network host with --allow \
                         network.host (the host's network)"
                    ));
                }
            },
        })
    }

    /// Whether the run gets its own network namespace.
    pub fn own_namespace(&self) -> bool {
        *self != NetPlan::Host
    }
}

/// Address pools for root sandboxes, tried in order; the first that overlaps none of the
/// host's routes (other than kiln's own) is used. Each sandbox gets a /30 of it.
pub const POOLS: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(10, 213, 0, 0), 16),
    (Ipv4Addr::new(10, 214, 0, 0), 16),
    (Ipv4Addr::new(172, 22, 0, 0), 16),
    (Ipv4Addr::new(192, 168, 213, 0), 24),
];

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let m = mask(a.1.min(b.1));
    u32::from(a.0) & m == u32::from(b.0) & m
}

/// The routes of `/proc/net/route` text (interface, destination, prefix length), leaving
/// out default routes.
pub fn routes(proc_net_route: &str) -> Vec<(String, Ipv4Addr, u8)> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, mask) = (fields.first()?, hex(fields.get(1)?)?, hex(fields.get(7)?)?);
            // The kernel prints the network-order words as native integers.
            let dest = Ipv4Addr::from(dest.to_ne_bytes());
            let len = u32::from_be_bytes(mask.to_ne_bytes()).count_ones() as u8;
            (len > 0).then(|| ((*iface).to_owned(), dest, len))
        })
        .collect()
}

/// The first of [`POOLS`] that overlaps no route (except those on kiln's own `kiln-*`
/// links) and holds none of `avoid` (the nameservers).
pub fn choose_pool(
    routes: &[(String, Ipv4Addr, u8)],
    avoid: &[Ipv4Addr],
) -> Result<(Ipv4Addr, u8), String> {
    POOLS
        .iter()
        .copied()
        .find(|pool| {
            !routes
                .iter()
                .filter(|(iface, ..)| !iface.starts_with(nft::IF_PREFIX))
                .any(|(_, net, len)| overlaps(*pool, (*net, *len)))
                && !avoid.iter().any(|a| overlaps(*pool, (*a, 32)))
        })
        .ok_or_else(|| {
            format!(
                "every address pool for sandboxes ({}) overlaps a route of this host: build \
                 with --network none, or --network host with --allow network.host",
                POOLS
                    .iter()
                    .map(|(n, l)| format!("{n}/{l}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// How many sandboxes a pool holds (one /30 each).
pub fn capacity(pool: (Ipv4Addr, u8)) -> u32 {
    1u32 << (32 - u32::from(pool.1) - 2)
}

/// The names and addresses of the sandbox holding lease `index` of `pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethAddrs {
    /// The host's end, `kiln-INDEX` (the sandbox's end is [`SANDBOX_IF`]).
    pub host_if: String,
    /// The host end's address, the sandbox's gateway.
    pub host: Ipv4Addr,
    /// The sandbox's address.
    pub sandbox: Ipv4Addr,
    /// The prefix length of both (30).
    pub prefix: u8,
}

/// [`VethAddrs`] for lease `index` of `pool`.
pub fn veth_addrs(pool: (Ipv4Addr, u8), index: u32) -> VethAddrs {
    let base = u32::from(pool.0) & mask(pool.1);
    let net = base + 4 * index;
    VethAddrs {
        host_if: format!("{}{index}", nft::IF_PREFIX),
        host: Ipv4Addr::from(net + 1),
        sandbox: Ipv4Addr::from(net + 2),
        prefix: 30,
    }
}

/// Which network namespace a [`LinkStep`] runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The host's.
    Host,
    /// The sandbox's own.
    Sandbox,
}

/// One rtnetlink operation of a root sandbox's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStep {
    /// Create a veth pair (`RTM_NEWLINK`, kind `veth`) with one end on the host and the
    /// other made directly in the sandbox's namespace (moving a link between namespaces
    /// costs an RCU grace period, ~15 ms).
    CreateVeth {
        /// The host's end.
        host: String,
        /// The sandbox's end.
        peer: String,
    },
    /// Turn IPv6 off on a link before it goes up (`disable_ipv6`): the sandbox has only
    /// IPv4, and with IPv6 on, the host's end would take router advertisements from the
    /// sandbox (whose root has `CAP_NET_RAW`) and let it add a default route and an
    /// address to the host.
    NoIpv6 {
        /// Where.
        side: Side,
        /// The interface.
        ifname: String,
    },
    /// Add an IPv4 address (`RTM_NEWADDR`).
    Addr {
        /// Where.
        side: Side,
        /// The interface.
        ifname: String,
        /// The address.
        addr: Ipv4Addr,
        /// Its prefix length.
        prefix: u8,
    },
    /// Bring a link up.
    Up {
        /// Where.
        side: Side,
        /// The interface.
        ifname: String,
    },
    /// The sandbox's default route (`RTM_NEWROUTE`).
    DefaultRoute {
        /// The gateway, the host's end.
        gateway: Ipv4Addr,
        /// Through this interface.
        ifname: String,
    },
}

/// The sandbox's interface name.
pub const SANDBOX_IF: &str = "eth0";

/// The link steps of a root sandbox, performed once the helper is in its new network
/// namespace (the pair's sandbox end is created there), through one netlink socket on
/// each side. The pair is never deleted by kiln: it goes with the sandbox's namespace.
pub fn veth_steps(a: &VethAddrs) -> Vec<LinkStep> {
    vec![
        LinkStep::CreateVeth {
            host: a.host_if.clone(),
            peer: SANDBOX_IF.to_owned(),
        },
        LinkStep::NoIpv6 {
            side: Side::Host,
            ifname: a.host_if.clone(),
        },
        LinkStep::NoIpv6 {
            side: Side::Sandbox,
            ifname: SANDBOX_IF.to_owned(),
        },
        LinkStep::Addr {
            side: Side::Host,
            ifname: a.host_if.clone(),
            addr: a.host,
            prefix: a.prefix,
        },
        LinkStep::Up {
            side: Side::Host,
            ifname: a.host_if.clone(),
        },
        LinkStep::Addr {
            side: Side::Sandbox,
            ifname: SANDBOX_IF.to_owned(),
            addr: a.sandbox,
            prefix: a.prefix,
        },
        LinkStep::Up {
            side: Side::Sandbox,
            ifname: SANDBOX_IF.to_owned(),
        },
        LinkStep::DefaultRoute {
            gateway: a.host,
            ifname: SANDBOX_IF.to_owned(),
        },
    ]
}

/// `slirp4netns`'s arguments for the sandbox whose helper is `pid`: configure `tap0`
/// (10.0.2.100/24, gateway 10.0.2.2), nothing to the host's loopback, no DNS proxy (it
/// would reach a loopback resolver of the host), itself sandboxed; `--exit-fd=0` (its
/// stdin: it exits when kiln's end closes) and `--ready-fd=1` (its stdout).
pub fn slirp_args(pid: i32) -> Vec<String> {
    [
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--disable-dns",
        "--enable-sandbox",
        "--enable-seccomp",
        "--exit-fd=0",
        "--ready-fd=1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([pid.to_string(), "tap0".to_owned()])
    .collect()
}

/// Docker's fallback nameservers, when the host has none the sandbox can reach.
pub const FALLBACK_DNS: &[&str] = &["8.8.8.8", "8.8.4.4"];

/// The `/etc/resolv.conf` a sandbox with its own network sees, from the host's: as
/// Docker does, nameservers on the host's loopback (`127.0.0.0/8`, `::1`: systemd-resolved,
/// dnsmasq) are removed, and IPv6 ones too (the sandbox has only IPv4); when none is
/// left, Google's public resolvers ([`FALLBACK_DNS`]). `search` and `options` stay.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut kept = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            match words.next().map(str::parse::<Ipv4Addr>) {
                Some(Ok(addr)) if !addr.is_loopback() && !addr.is_unspecified() => kept += 1,
                _ => continue,
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if kept == 0 {
        for ns in FALLBACK_DNS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

/// The nameservers of a resolv.conf text.
pub fn nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver")?.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_per_network_and_mode() {
        let found = |_: &str| Some(PathBuf::from("/usr/bin/slirp4netns"));
        let missing = |_: &str| None;
        assert_eq!(
            NetPlan::new(Network::Default, false, missing),
            Ok(NetPlan::Veth)
        );
        assert_eq!(
            NetPlan::new(Network::Default, true, found),
            Ok(NetPlan::Slirp {
                exe: "/usr/bin/slirp4netns".into()
            })
        );
        let err = NetPlan::new(Network::Default, true, missing).expect_err("no slirp4netns");
        assert!(err.contains("Debian package slirp4netns") && err.contains("--network none"));
        for rootless in [false, true] {
            assert_eq!(
                NetPlan::new(Network::None, rootless, missing),
                Ok(NetPlan::Loopback)
            );
            assert_eq!(
                NetPlan::new(Network::Host, rootless, missing),
                Ok(NetPlan::Host)
            );
        }
        assert!(!NetPlan::Host.own_namespace() && NetPlan::Loopback.own_namespace());
    }

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        kiln-0\t0000D50A\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0\n";

    #[test]
    fn pool_avoids_the_hosts_routes_and_resolver() {
        let routes = routes(ROUTES);
        assert_eq!(
            routes,
            [
                ("eth0".to_owned(), Ipv4Addr::new(192, 0, 2, 0), 24),
                ("kiln-0".to_owned(), Ipv4Addr::new(10, 213, 0, 0), 30),
            ]
        );
        let resolver = Ipv4Addr::new(10, 255, 255, 53);
        // kiln's own links do not push the pool elsewhere.
        assert_eq!(choose_pool(&routes, &[resolver]), Ok(POOLS[0]));
        let mut busy = routes.clone();
        busy.push(("docker0".into(), Ipv4Addr::new(10, 0, 0, 0), 8));
        assert_eq!(choose_pool(&busy, &[resolver]), Ok(POOLS[2]));
        assert_eq!(
            choose_pool(&[], &[Ipv4Addr::new(10, 213, 7, 1)]),
            Ok(POOLS[1])
        );
        busy.push(("eth1".into(), Ipv4Addr::new(172, 16, 0, 0), 12));
        busy.push(("eth2".into(), Ipv4Addr::new(192, 168, 0, 0), 16));
        assert!(
            choose_pool(&busy, &[])
                .unwrap_err()
                .contains("--network none")
        );
    }

    #[test]
    fn leases_get_their_own_slash_30() {
        let a = veth_addrs(POOLS[0], 0);
        assert_eq!(
            (a.host, a.sandbox),
            (Ipv4Addr::new(10, 213, 0, 1), Ipv4Addr::new(10, 213, 0, 2))
        );
        let b = veth_addrs(POOLS[0], 16383);
        assert_eq!(b.host_if, "kiln-16383");
        assert!(
            b.host_if.len() < 16,
            "an interface name has at most 15 bytes"
        );
        assert_eq!(b.sandbox, Ipv4Addr::new(10, 213, 255, 254));
        assert_eq!(capacity(POOLS[0]), 16384);
        assert_eq!(capacity(POOLS[3]), 64);
        let steps = veth_steps(&a);
        assert!(
            matches!(&steps[0], LinkStep::CreateVeth { host, peer } if host == "kiln-0" && peer == "eth0")
        );
        assert_eq!(
            steps.last(),
            Some(&LinkStep::DefaultRoute {
                gateway: a.host,
                ifname: "eth0".into()
            })
        );
        // Each end has IPv6 off before it goes up.
        for (side, name) in [(Side::Host, "kiln-0"), (Side::Sandbox, "eth0")] {
            let at = |want: &dyn Fn(&LinkStep) -> bool| steps.iter().position(want);
            let off = at(
                &|s| matches!(s, LinkStep::NoIpv6 { side: s2, ifname } if *s2 == side && ifname == name),
            );
            let up = at(
                &|s| matches!(s, LinkStep::Up { side: s2, ifname } if *s2 == side && ifname == name),
            );
            assert!(
                matches!((off, up), (Some(off), Some(up)) if off < up),
                "{steps:?}"
            );
        }
    }

    #[test]
    fn resolv_conf_drops_loopback_and_ipv6_nameservers() {
        let host = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver ::1\n\
                    nameserver 10.255.255.53\nnameserver fe80::1%eth0\noptions edns0\n";
        assert_eq!(
            resolv_conf(host),
            "# generated\nsearch example.com\nnameserver 10.255.255.53\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf("nameserver 127.0.0.53\noptions edns0 trust-ad\n"),
            "options edns0 trust-ad\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(resolv_conf(""), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        assert_eq!(
            nameservers(host),
            [
                Ipv4Addr::new(127, 0, 0, 53),
                Ipv4Addr::new(10, 255, 255, 53)
            ]
        );
    }

    #[test]
    fn slirp_never_reaches_the_hosts_loopback() {
        let args = slirp_args(42);
        for flag in [
            "--disable-host-loopback",
            "--disable-dns",
            "--exit-fd=0",
            "--ready-fd=1",
        ] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing: {args:?}");
        }
        assert_eq!(&args[args.len() - 2..], ["42", "tap0"]);
    }
}
