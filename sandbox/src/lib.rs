//! Runs one process in fresh Linux namespaces on a rootfs given as mount data: kiln's
//! executor for `RUN`.
//!
//! It owns namespaces (mnt, pid, uts, ipc, net unless [`Network::Host`], and user when
//! rootless), the network ([`net`]: a veth pair with NAT as root, `slirp4netns`
//! rootless, only `lo` for [`Network::None`]), the mounts inside them (the rootfs from its [`Mount`] list, `/proc` with
//! runc's masked and read-only paths, a read-only `/sys`, a minimal `/dev`, `/etc/hosts`,
//! `/etc/resolv.conf` and `/etc/hostname` bound from a private temp dir, and the
//! [`ExtraMount`]s),
//! `pivot_root`, the user (resolved in the rootfs's `/etc/passwd` and `/etc/group`),
//! Docker's default capabilities, `no_new_privs`, a seccomp filter equivalent to Docker's
//! default profile, clamped rlimits, the exit status and the output stream. It refuses to
//! know about images, layers or snapshots: the caller passes mounts and gets a status.
//!
//! Process model (DESIGN.md): [`run`] never forks the calling (multi-threaded) process;
//! it re-executes [`Spec::helper_exe`] (`/proc/self/exe`), whose `main` must call
//! [`helper::run_if_requested`] first. The single-threaded helper unshares, forks the
//! command's PID 1 into the new pid namespace, which mounts, pivots and execs. When PID 1
//! exits the kernel kills everything left in the namespace, and the mount namespace (so
//! every mount) dies with it: nothing reaches the host's mount table. [`CancelHandle`]
//! sends SIGKILL to PID 1.
//!
//! Rootless mode: when kiln is not root (`geteuid() != 0`, or `KILN_ROOTLESS=1` to force
//! it), the helper first enters a new user namespace where the caller is root; the
//! caller's `/etc/subuid` and `/etc/subgid` ranges become ids 1 and up through
//! `newuidmap`/`newgidmap` (the only programs kiln runs), or, without a range, the caller's
//! own ids are the whole map ([`userns`]). The rest is the same sandbox, with what a user
//! namespace may not do replaced: overlay mounts get `userxattr` (Linux >= 5.11), devpts
//! loses `gid=5` when that group is unmapped, and with the host's network `/sys` is the
//! host's bound read-only. See `docs/rootless.md`.
//!
//! File descriptors: the helper marks every fd from 3 up close-on-exec first thing, and
//! PID 1 again right before exec, so the command starts with 0, 1 and 2 only, whatever
//! the process that started kiln left open.
//!
//! Main types: [`Spec`] (plain data), [`run`], [`CancelHandle`], [`ExitStatus`],
//! [`Error`]; [`plan`] turns a spec into ordered mount [`plan::Step`]s;
//! [`userns::UserNamespace`] holds a rootless run's id maps; all `unsafe` is in
//! [`sys::linux`].
//!
//! ```no_run
//! use kiln_sandbox::{CancelHandle, Spec, Stream, bind_rootfs};
//!
//! let spec = Spec::new(bind_rootfs("/var/lib/rootfs"), vec!["sh".into(), "-c".into(), "echo hi".into()]);
//! let mut out = Vec::new();
//! let status = kiln_sandbox::run(&spec, &mut |stream, line| {
//!     if stream == Stream::Stdout {
//!         out.extend_from_slice(line);
//!     }
//! }, &CancelHandle::new())?;
//! assert!(status.success());
//! # Ok::<(), kiln_sandbox::Error>(())
//! ```
//!
//! Not done yet: cgroups (no memory/cpu limits).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod caps;
mod error;
pub mod helper;
mod init;
pub mod net;
pub mod plan;
pub mod pty;
pub mod rlimit;
mod run;
pub mod seccomp;
pub mod setup;
mod spec;
pub mod sys;
pub mod user;
pub mod userns;

pub use error::Error;
pub use nix::sys::signal::Signal;
pub use run::{Attach, CancelHandle, ExitStatus, Stream, run, run_attached};
pub use spec::{DEFAULT_PATH, ExtraMount, Mount, Network, Spec, bind_rootfs};
pub use sys::linux::WindowSize;
