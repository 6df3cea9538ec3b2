//! The sandbox's input: plain data, serialised as JSON to the helper process.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A mount as data (containerd's shape): the snapshotter returns a list of these for the
/// rootfs and the sandbox performs them inside its own mount namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `overlay`, `bind`, `tmpfs` ...
    pub kind: String,
    /// Source: a path, or the filesystem's name.
    pub source: String,
    /// Where, relative to the rootfs (`/` for the rootfs itself).
    pub target: String,
    /// Options: flags (`ro`, `nosuid`, `rbind` ...) and filesystem data (`lowerdir=A:B` ...).
    pub options: Vec<String>,
}

/// Which network the command sees (see [`crate::net`] for how each is made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// What `docker build` gives: an own network namespace with outbound access (NAT)
    /// and no view of the host's loopback; as root a veth pair and an nftables table kiln
    /// owns, rootless `slirp4netns`.
    #[default]
    Default,
    /// A fresh network namespace with only `lo`, brought up.
    None,
    /// The host's network namespace itself (`--network=host`, which kiln's frontend
    /// grants only with `--allow network.host`): the host's loopback included.
    Host,
}

/// A mount added on top of the rootfs (`RUN --mount=...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExtraMount {
    /// A bind mount of a host file or directory (also a cache directory: read-write).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Absolute path inside the sandbox.
        target: String,
        /// Mount it read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Absolute path inside the sandbox.
        target: String,
        /// Size limit in bytes (`None`: the kernel's default, half of RAM).
        size: Option<u64>,
        /// Mode of its root directory (`0o1777` when `None`).
        mode: Option<u32>,
    },
    /// A secret: the sandbox copies the host file into its private temp dir with the given
    /// owner and mode and binds that copy read-only, so the source's metadata is untouched.
    Secret {
        /// Host file holding the secret.
        source: PathBuf,
        /// Absolute path inside the sandbox.
        target: String,
        /// File mode (`0o400` when `None`).
        mode: Option<u32>,
        /// Owner uid (0 when `None`).
        uid: Option<u32>,
        /// Owner gid (0 when `None`).
        gid: Option<u32>,
    },
}

/// Everything one sandboxed run needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The mounts making up the root filesystem; one must target `/`.
    pub rootfs: Vec<Mount>,
    /// The command; `argv[0]` is looked up in the `PATH` of `env` when it has no `/`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` pairs, the command's whole environment.
    pub env: Vec<String>,
    /// Working directory inside the sandbox, created (owned by root, 0755) when missing.
    pub cwd: String,
    /// `uid[:gid]` or `name[:group]` resolved in the rootfs's `/etc/passwd` and `/etc/group`;
    /// empty means root.
    pub user: String,
    /// The sandbox's hostname (also written to `/etc/hostname` and `/etc/hosts`).
    pub hostname: String,
    /// The network namespace.
    pub network: Network,
    /// Mounts on top of the rootfs, performed in order.
    pub mounts: Vec<ExtraMount>,
    /// Extra `/etc/hosts` lines (`IP NAME...`), after the defaults.
    pub extra_hosts: Vec<String>,
    /// The file copied to `/etc/resolv.conf` (`None`: the host's `/etc/resolv.conf`, its
    /// loopback and IPv6 nameservers removed unless the network is the host's; see
    /// [`crate::net::resolv_conf`]).
    pub resolv_conf: Option<PathBuf>,
    /// Kill the command after this long.
    pub timeout: Option<Duration>,
    /// The binary that acts as the helper (it must call
    /// [`crate::helper::run_if_requested`] first thing); `/proc/self/exe` by default.
    pub helper_exe: PathBuf,
}

impl Spec {
    /// A spec running `argv` as root on `rootfs`, with Docker's default `PATH`, cwd `/`,
    /// hostname `kiln`, the default network (own namespace, NAT) and no extra mounts.
    pub fn new(rootfs: Vec<Mount>, argv: Vec<String>) -> Spec {
        Spec {
            rootfs,
            argv,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".to_owned(),
            user: String::new(),
            hostname: "kiln".to_owned(),
            network: Network::Default,
            mounts: Vec::new(),
            extra_hosts: Vec::new(),
            resolv_conf: None,
            timeout: None,
            helper_exe: PathBuf::from("/proc/self/exe"),
        }
    }
}

/// Docker's default `PATH`, used to find `argv[0]` when `env` has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A bind mount of a host directory as the rootfs: what a copy snapshotter returns.
pub fn bind_rootfs(dir: impl Into<PathBuf>) -> Vec<Mount> {
    vec![Mount {
        kind: "bind".to_owned(),
        source: dir.into().to_string_lossy().into_owned(),
        target: "/".to_owned(),
        options: vec!["rbind".to_owned(), "rw".to_owned()],
    }]
}
