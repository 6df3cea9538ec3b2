//! Performing a root sandbox's network: the lease, kiln's nftables table, forwarding, and
//! the [`LinkStep`]s. Runs in the (single-threaded, root) helper: [`Veth::prepare`] in the
//! host's network namespace (it also forks the janitor), [`Veth::enter`] right after the
//! helper unshared its own, [`Veth::finish`] after the command ended.
//!
//! Leases: `/run/kiln/net/lease-NETNS-INDEX`, one per live sandbox, `flock`ed through an
//! open file the helper and its janitor share, so a lease lives until the janitor has
//! cleaned up after the helper ended or died (a `kill -9` included); NETNS is the inode of
//! the host network namespace, since addresses and the table are per namespace. Every
//! lease change and the table's setup and removal happen under `/run/kiln/net/lock`, so
//! processes see a consistent set: a lease file whose lock can be taken is stale and
//! reused or removed. The janitor removes the table and restores `ip_forward`
//! [`JANITOR_GRACE`] after the last lease of a namespace goes.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use super::netlink::{F_ACK, F_CREATE, F_EXCL, F_REQUEST, Msg, Socket};
use super::{LinkStep, Side, VethAddrs, nft};

/// Where leases and the lock live.
pub(crate) const NET_DIR: &str = "/run/kiln/net";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const NETNS: &str = "/proc/self/ns/net";

/// A root sandbox's network between [`Veth::prepare`] and [`Veth::finish`].
#[derive(Debug)]
pub(crate) struct Veth {
    addrs: VethAddrs,
    after: Vec<LinkStep>,
    /// rtnetlink, bound in the host's namespace.
    host: Socket,
    /// nfnetlink, bound in the host's namespace.
    netfilter: Socket,
    /// The host's `ip_forward`, opened in its namespace.
    sysctl: File,
    /// The host's network namespace (`/proc/self/ns/net` before the unshare), to step
    /// back into for the host end's `disable_ipv6`, which only its sysctl tree has.
    host_ns: File,
    dir: NetDir,
    /// The lease file, `flock`ed: the lock is on the open file, shared with the janitor.
    lease: Option<(String, File)>,
    /// The write end of the janitor's pipe: its EOF (the helper done or dead) starts the
    /// cleanup.
    janitor: Option<OwnedFd>,
    netns: u64,
}

fn err(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The inode of this process's network namespace.
pub(crate) fn netns_id() -> io::Result<u64> {
    Ok(fs::metadata("/proc/self/ns/net")?.ino())
}

/// `/run/kiln/net`, opened before the helper unshares: once the sandbox's PID 1 pivots
/// into its root, every path of the helper (which shares its mount namespace) resolves
/// inside the sandbox, so all later file operations go through this fd.
#[derive(Debug)]
struct NetDir(OwnedFd);

impl NetDir {
    fn open() -> Result<NetDir, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(NET_DIR)
            .map_err(err(NET_DIR))?;
        let fd = nix::fcntl::open(
            NET_DIR,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open {NET_DIR}: {e}"))?;
        Ok(NetDir(fd))
    }

    fn file(&self, name: &str, create: bool) -> Result<File, String> {
        let mut flags = OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        if create {
            flags |= OFlag::O_CREAT;
        }
        nix::fcntl::openat(&self.0, name, flags, Mode::from_bits_truncate(0o600))
            .map(File::from)
            .map_err(|e| format!("open {NET_DIR}/{name}: {e}"))
    }

    fn remove(&self, name: &str) {
        let _ = nix::unistd::unlinkat(&self.0, name, UnlinkatFlags::NoRemoveDir);
    }

    fn names(&self) -> Vec<String> {
        let Ok(fd) = nix::fcntl::openat(
            &self.0,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return Vec::new();
        };
        let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else {
            return Vec::new();
        };
        dir.iter()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The directory lock (`flock`, released when the returned file is closed), held
    /// while leases, the table or forwarding change.
    fn lock(&self) -> Result<File, String> {
        let file = self.file("lock", true)?;
        file.lock()
            .map_err(|e| format!("lock {NET_DIR}/lock: {e}"))?;
        Ok(file)
    }
}

fn lease_prefix(netns: u64) -> String {
    format!("lease-{netns}-")
}

/// Takes the first free lease index below `capacity` (under the directory lock) whose
/// host link is gone (a finished sandbox's pair leaves with its namespace, a little later).
fn take_lease(
    dir: &NetDir,
    netns: u64,
    capacity: u32,
    link_exists: &mut dyn FnMut(u32) -> bool,
) -> Result<(u32, String, File), String> {
    for index in 0..capacity {
        if link_exists(index) {
            continue;
        }
        let name = format!("{}{index}", lease_prefix(netns));
        let file = dir.file(&name, true)?;
        if file.try_lock().is_ok() {
            return Ok((index, name, file));
        }
    }
    Err(format!(
        "all {capacity} network leases under {NET_DIR} are taken: run fewer builds at once"
    ))
}

/// Removes stale leases (their holder is gone) and says whether `netns` still has one.
fn sweep(dir: &NetDir, netns: u64) -> bool {
    let mut live = false;
    let ours = lease_prefix(netns);
    for name in dir.names() {
        if !name.starts_with("lease-") {
            continue;
        }
        let Ok(file) = dir.file(&name, false) else {
            continue;
        };
        match file.try_lock() {
            Ok(()) => dir.remove(&name),
            Err(_) => live |= name.starts_with(&ours),
        }
    }
    live
}

fn forward_record(netns: u64) -> String {
    format!("ip_forward-{netns}")
}

/// Turns IPv4 forwarding on (as Docker does), remembering in `ip_forward-NETNS` that it
/// was off. `sysctl` is `/proc/sys/net/ipv4/ip_forward` opened in the host's namespace.
fn enable_forwarding(dir: &NetDir, sysctl: &mut File, netns: u64) -> Result<(), String> {
    let now = fs::read_to_string(IP_FORWARD).map_err(err(IP_FORWARD))?;
    if now.trim() == "1" {
        return Ok(());
    }
    let record = forward_record(netns);
    if !dir.names().contains(&record) {
        dir.file(&record, true)?
            .write_all(now.trim().as_bytes())
            .map_err(err(&record))?;
    }
    // pwrite at 0: a sysctl ignores writes past the start.
    sysctl.write_at(b"1", 0).map(drop).map_err(err(IP_FORWARD))
}

/// Puts back the forwarding setting kiln found, if kiln changed it.
fn restore_forwarding(dir: &NetDir, sysctl: &mut File, netns: u64) {
    let record = forward_record(netns);
    if dir.names().contains(&record) {
        let _ = sysctl.write_at(b"0", 0);
        dir.remove(&record);
    }
}

/// Creates kiln's table (see [`nft`]) unless it exists. Called under the directory lock
/// with this run's lease held, so no janitor removes the table after the question.
/// Asking first keeps the common case (the table is there since the build's first RUN)
/// out of nf_tables' transactions: the exclusive batch, refused with `EEXIST`, is
/// aborted, and the abort waits for an RCU grace period (~9 ms a RUN, measured). The
/// batch stays exclusive, so a table that appears after the question (made by a kiln that
/// does not see this lock directory) is still never duplicated.
fn install_table(netfilter: &mut Socket, pool: (std::net::Ipv4Addr, u8)) -> io::Result<()> {
    // Any failure of the query (no nf_tables yet, say) is left to the batch to report.
    if netfilter.query(nft::get_table()).is_ok() {
        return Ok(());
    }
    match netfilter.batch(nft::create_batch(&nft::ruleset(pool))) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

impl Veth {
    /// In the host's namespace: lease, table, forwarding. The lease is released again if
    /// anything fails.
    pub(crate) fn prepare() -> Result<Veth, String> {
        let netns = netns_id().map_err(err("stat /proc/self/ns/net"))?;
        let mut host = Socket::route().map_err(err("open a netlink socket"))?;
        let netfilter = Socket::netfilter().map_err(err("open a netfilter netlink socket"))?;
        let sysctl = File::options()
            .write(true)
            .open(IP_FORWARD)
            .map_err(err(IP_FORWARD))?;
        let host_ns = File::open(NETNS).map_err(err(NETNS))?;
        let dir = NetDir::open()?;
        let lock = dir.lock()?;
        let routes = fs::read_to_string("/proc/net/route").map_err(err("/proc/net/route"))?;
        let resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let pool = super::choose_pool(&super::routes(&routes), &super::nameservers(&resolv))?;
        let mut link_exists = |index| {
            let name = super::veth_addrs(pool, index).host_if;
            index_of_on_host(&mut host, &name).is_ok()
        };
        let (index, name, lease) =
            take_lease(&dir, netns, super::capacity(pool), &mut link_exists)?;
        let mut veth = Veth {
            addrs: super::veth_addrs(pool, index),
            after: Vec::new(),
            host,
            netfilter,
            sysctl,
            host_ns,
            dir,
            lease: Some((name, lease)),
            janitor: None,
            netns,
        };
        let set_up = enable_forwarding(&veth.dir, &mut veth.sysctl, netns).and_then(|()| {
            install_table(&mut veth.netfilter, pool).map_err(|e| {
                format!(
                    "install the nftables table ip {}: {e}: the default network needs \
                         nf_tables with NAT (nft_chain_nat, nft_masq, nf_conntrack); or build \
                         with --network none, or --network host with --allow network.host",
                    nft::TABLE
                )
            })
        });
        drop(lock);
        if let Err(e) = set_up {
            veth.clean_up(None);
            return Err(e);
        }
        veth.after = super::veth_steps(&veth.addrs);
        veth.fork_janitor()?;
        Ok(veth)
    }

    /// In the sandbox's new namespace (the helper just unshared it): the pair (`kiln-N`
    /// on the host, `eth0` made directly here), both ends' addresses, `lo` and both ends
    /// up, the default route.
    pub(crate) fn enter(&mut self) -> Result<(), String> {
        crate::sys::linux::loopback_up().map_err(|e| format!("bring lo up: {e}"))?;
        let mut inside = Socket::route().map_err(err("open a netlink socket"))?;
        let steps = std::mem::take(&mut self.after);
        for step in &steps {
            perform(&mut self.host, &self.host_ns, Some(&mut inside), step)?;
        }
        Ok(())
    }

    /// Forks the janitor, still in the host's namespaces (so it neither keeps the
    /// sandbox's mounts nor its network alive): it waits for the helper to finish or die,
    /// then cleans up ([`Veth::clean_up`]) — also after a `kill -9` of kiln, since it has
    /// no parent-death signal. It shares the lease's open file (so its lock) and lets go
    /// of everything else the helper holds: the socket and the command's output pipes.
    fn fork_janitor(&mut self) -> Result<(), String> {
        let (read, write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let devnull = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(err("open /dev/null"))?;
        match crate::sys::linux::fork().map_err(|e| format!("fork the network janitor: {e}"))? {
            nix::unistd::ForkResult::Child => {
                drop(write);
                // Out of kiln's process group, so a ^C to kiln does not cut the cleanup.
                let _ = nix::unistd::setsid();
                let _ = nix::unistd::dup2_stdin(&devnull);
                let _ = nix::unistd::dup2_stdout(&devnull);
                let _ = nix::unistd::dup2_stderr(&devnull);
                drop(devnull);
                // Nothing else of the helper's: not its socket to kiln (kiln waits for
                // its EOF), not what kiln inherited.
                let mut keep = vec![0, 1, 2, read.as_raw_fd(), self.dir.0.as_raw_fd()];
                keep.extend([self.netfilter.raw_fd(), self.sysctl.as_raw_fd()]);
                keep.extend(self.lease.as_ref().map(|(_, f)| f.as_raw_fd()));
                if crate::sys::linux::close_all_except(&keep).is_err() {
                    std::process::exit(1);
                }
                let mut byte = [0u8; 1];
                let mut read = File::from(read);
                while matches!(std::io::Read::read(&mut read, &mut byte), Ok(n) if n > 0) {}
                self.clean_up(Some(JANITOR_GRACE));
                std::process::exit(0)
            }
            nix::unistd::ForkResult::Parent { .. } => {
                drop(read);
                drop(devnull);
                self.janitor = Some(write);
                Ok(())
            }
        }
    }

    /// The helper is done: the janitor takes over (see [`Veth::fork_janitor`]); the
    /// lease stays locked through the janitor's copy of its file.
    pub(crate) fn finish(mut self) {
        drop(self.janitor.take());
        drop(self.lease.take());
    }

    /// Releases the lease, and, after `grace` (so back-to-back RUNs keep one table),
    /// removes the table and restores forwarding when no sandbox of this namespace is
    /// left. Works through fds and sockets opened in [`Veth::prepare`] only. The veth pair
    /// is left to the kernel, which destroys it with the sandbox's namespace (deleting it
    /// would wait for an RCU grace period, ~20 ms).
    fn clean_up(&mut self, grace: Option<std::time::Duration>) {
        if let Some((name, lease)) = self.lease.take()
            && let Ok(lock) = self.dir.lock()
        {
            self.dir.remove(&name);
            drop(lease);
            drop(lock);
        }
        if let Some(grace) = grace {
            std::thread::sleep(grace);
        }
        let Ok(lock) = self.dir.lock() else { return };
        if !sweep(&self.dir, self.netns) {
            let _ = self.netfilter.batch(nft::delete_batch());
            restore_forwarding(&self.dir, &mut self.sysctl, self.netns);
        }
        drop(lock);
    }
}

/// How long kiln's table outlives the last sandbox that needed it, so that the RUN
/// steps of a build, one after another, do not each create and delete it (deleting a
/// table with base chains waits for RCU, ~10-20 ms).
pub(crate) const JANITOR_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

// <linux/rtnetlink.h>, <linux/if_link.h>
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;

fn ifinfo(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = libc::AF_UNSPEC as u8;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// `RTM_NEWLINK`/`RTM_DELLINK` naming a link by name.
fn link_msg(flags: u16, ty: u16, name: &str) -> Msg {
    let mut msg = Msg::new(ty, F_REQUEST | flags).header(&ifinfo(0, 0, 0));
    msg.attr_str(IFLA_IFNAME, name);
    msg
}

fn index_of(name: &str) -> Result<u32, String> {
    nix::net::if_::if_nametoindex(name).map_err(|e| format!("find interface {name}: {e}"))
}

/// Turns IPv6 off on `ifname` of the calling thread's network namespace (the one
/// `/proc/sys/net` shows it). A kernel without IPv6 has no such file, and nothing to
/// turn off.
fn disable_ipv6(ifname: &str) -> Result<(), String> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match fs::write(&path, "1") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(err(&path)),
    }
}

/// [`disable_ipv6`] on the host's end: `/proc/sys/net` resolves in the namespace of the
/// thread that looks a name up, and netlink cannot set `disable_ipv6`, so the helper steps
/// back into the host's namespace for the write (two `setns`, ~tens of µs).
fn disable_ipv6_on_host(host_ns: &File, ifname: &str) -> Result<(), String> {
    let own = File::open(NETNS).map_err(err(NETNS))?;
    nix::sched::setns(host_ns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("enter the host's network namespace: {e}"))?;
    let written = disable_ipv6(ifname);
    // A failure here fails the run: the command must never start in the host's namespace.
    nix::sched::setns(&own, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("return to the sandbox's network namespace: {e}"))?;
    written
}

fn perform(
    host: &mut Socket,
    host_ns: &File,
    inside: Option<&mut Socket>,
    step: &LinkStep,
) -> Result<(), String> {
    let what = format!("{step:?}");
    let on = |side: Side, host: &mut Socket, inside: Option<&mut Socket>, msg: Msg| {
        let socket = match (side, inside) {
            (Side::Sandbox, Some(inside)) => inside,
            _ => host,
        };
        socket.request(msg)
    };
    let result = match step {
        LinkStep::CreateVeth { host: name, peer } => {
            let mut msg = link_msg(F_CREATE | F_EXCL | F_ACK, RTM_NEWLINK, name);
            one_queue(&mut msg);
            msg.nest(IFLA_LINKINFO)
                .attr_str(IFLA_INFO_KIND, "veth")
                .nest(IFLA_INFO_DATA);
            let ns = File::open(NETNS).map_err(err(NETNS))?;
            veth_peer(&mut msg, peer, &ns);
            msg.end().end();
            match host.request(msg.clone()) {
                // A dead sandbox's pair may still be on its way out of the kernel.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    let _ = host.request(link_msg(F_ACK, RTM_DELLINK, name));
                    host.request(msg)
                }
                other => other,
            }
        }
        LinkStep::NoIpv6 { side, ifname } => {
            return match side {
                Side::Host => disable_ipv6_on_host(host_ns, ifname),
                Side::Sandbox => disable_ipv6(ifname),
            }
            .map_err(|e| format!("network setup {what}: {e}"));
        }
        LinkStep::Addr {
            side,
            ifname,
            addr,
            prefix,
        } => {
            let index = match side {
                Side::Host => index_of_on_host(host, ifname)?,
                Side::Sandbox => index_of(ifname)?,
            };
            let mut h = [0u8; 8];
            h[0] = libc::AF_INET as u8;
            h[1] = *prefix;
            h[4..8].copy_from_slice(&index.to_ne_bytes());
            let mut msg = Msg::new(RTM_NEWADDR, F_REQUEST | F_CREATE | F_EXCL | F_ACK).header(&h);
            msg.attr(IFA_LOCAL, &addr.octets())
                .attr(IFA_ADDRESS, &addr.octets());
            on(*side, host, inside, msg)
        }
        LinkStep::Up { side, ifname } => {
            // Named, not indexed: the kernel looks the link up by IFLA_IFNAME in the
            // socket's namespace, which saves a lookup round trip.
            let up = libc::IFF_UP as u32;
            let mut msg = Msg::new(RTM_NEWLINK, F_REQUEST | F_ACK).header(&ifinfo(0, up, up));
            msg.attr_str(IFLA_IFNAME, ifname);
            on(*side, host, inside, msg)
        }
        LinkStep::DefaultRoute { gateway, ifname } => {
            let index = index_of(ifname)?;
            // rtmsg: family, dst_len, src_len, tos, table main, protocol boot, scope
            // universe, type unicast; flags.
            let h = [libc::AF_INET as u8, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
            let mut msg = Msg::new(RTM_NEWROUTE, F_REQUEST | F_CREATE | F_EXCL | F_ACK).header(&h);
            msg.attr(RTA_GATEWAY, &gateway.octets())
                .attr_u32(RTA_OIF, index);
            on(Side::Sandbox, host, inside, msg)
        }
    };
    result.map_err(|e| format!("network setup {what}: {e}"))
}

/// One transmit and one receive queue for a veth end. The kernel's default is one of
/// each per possible CPU, every queue a kobject with its sysfs files and uevent: creating
/// the pair took ~0.7 ms with two CPUs, ~0.4 ms with one queue each, and grows with the
/// host's CPUs. A veth without XDP hands packets to the receiving CPU's backlog whatever
/// the queue, and transmits without a qdisc lock, so one queue costs no throughput.
fn one_queue(msg: &mut Msg) {
    msg.attr_u32(IFLA_NUM_TX_QUEUES, 1)
        .attr_u32(IFLA_NUM_RX_QUEUES, 1);
}

/// The peer description inside `VETH_INFO_PEER`: an `ifinfomsg`, then its name.
fn veth_peer(msg: &mut Msg, peer: &str, netns: &File) {
    // VETH_INFO_PEER's payload starts with a struct ifinfomsg, not an attribute; build the
    // nest by hand: header, the 16 bytes, then IFLA_IFNAME.
    let mut inner = Msg::new(0, 0).header(&ifinfo(0, 0, 0));
    inner
        .attr_str(IFLA_IFNAME, peer)
        .attr_u32(IFLA_NET_NS_FD, netns.as_raw_fd() as u32);
    one_queue(&mut inner);
    let bytes = inner.finish(0);
    msg.attr(VETH_INFO_PEER | 0x8000, &bytes[16..]);
}

/// The index of a link in the host's namespace (the helper may already be in its own).
fn index_of_on_host(host: &mut Socket, name: &str) -> Result<u32, String> {
    let msg = link_msg(0, 18, name); // RTM_GETLINK
    let reply = host
        .query(msg)
        .map_err(|e| format!("find interface {name}: {e}"))?;
    reply
        .get(4..8)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| format!("find interface {name}: short answer"))
}
