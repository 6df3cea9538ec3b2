//! The single-threaded helper process that the sandbox re-executes the kiln binary as.
//!
//! Protocol: the parent starts `Spec::helper_exe` with `KILN_SANDBOX_HELPER=1` in its
//! environment and one end of a socket pair as stdin. It writes a [`Request`] as JSON and
//! shuts down its write side; the helper answers with one JSON [`Report`] per line on the
//! same socket: `Started` (the command's host pid, for cancel), then `Exited`, `Signaled`
//! or `Failed`. The command's stdout and stderr are the helper's own, inherited.
//!
//! When the request carries a user namespace (rootless), the helper enters it before the
//! other namespaces, with a forked mapper writing its id maps ([`crate::userns`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::init::secret_copy;
use crate::net::NetPlan;
use crate::net::root::Veth;
use crate::net::slirp::Slirp;
use crate::spec::{ExtraMount, Spec};
use crate::sys::linux::{self, WindowSize};
use crate::userns::{self, UserNamespace};

/// The environment variable that marks a process as the helper.
pub const MARKER_ENV: &str = "KILN_SANDBOX_HELPER";

/// What the parent sends.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) spec: Spec,
    /// The run's private temp dir: `root/` (the empty new root), `hosts`, `resolv.conf`,
    /// `hostname`, `secret-N`.
    pub(crate) tmp: PathBuf,
    /// The user namespace to run in (rootless mode), decided by the caller.
    pub(crate) userns: Option<UserNamespace>,
    /// The network stack, decided by the caller.
    pub(crate) net: NetPlan,
    /// How the command's stdin, stdout and stderr are connected.
    #[serde(default)]
    pub(crate) stdio: StdioPlan,
}

/// The command's standard streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StdioPlan {
    /// stdin `/dev/null`, stdout and stderr the helper's (pipes the caller reads).
    #[default]
    Piped,
    /// The caller's own streams: stdout and stderr the helper's (inherited from the
    /// caller), stdin the descriptor sent with the request's header when `stdin`; with a
    /// `terminal`, a pty made inside the sandbox instead of all three, its master sent
    /// back in a [`Report::Terminal`].
    Attached {
        stdin: bool,
        terminal: Option<WindowSize>,
    },
}

/// What the helper answers, one JSON object a line.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    Started {
        pid: i32,
    },
    /// The pty's master is attached to this message (`SCM_RIGHTS`).
    Terminal,
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    Failed {
        message: String,
    },
}

/// When this process was started as the sandbox helper, run it and return its exit code;
/// otherwise return `None` at once. Call first thing in `main`, before any thread starts.
pub fn run_if_requested() -> Option<ExitCode> {
    if std::env::var_os(MARKER_ENV).is_none_or(|v| v != "1") {
        return None;
    }
    // If kiln dies, the helper (and through the pid namespace, the command) dies too.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // The helper needs only 0 (the socket), 1 and 2 (the command's output pipes); every
    // other fd came from whoever started kiln and must not reach the command (issue 17).
    // Everything the helper opens from here on is close-on-exec too.
    if linux::cloexec_from_3().is_err() {
        return Some(ExitCode::from(125));
    }
    let stdin = std::io::stdin();
    let Ok(fd) = stdin.as_fd().try_clone_to_owned() else {
        return Some(ExitCode::from(125));
    };
    let mut socket = File::from(fd);
    let report = match read_request(&mut socket) {
        Ok((request, stdin)) => run_helper(&request, stdin, &mut socket),
        Err(message) => Report::Failed { message },
    };
    Some(match send(&mut socket, &report) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(125),
    })
}

/// The request: a one-byte header carrying the command's stdin (when attached), then the
/// JSON up to EOF.
fn read_request(socket: &mut File) -> Result<(Request, Option<OwnedFd>), String> {
    let mut header = [0u8; 1];
    let (n, mut fds) = linux::recv_with_fds(socket.as_fd(), &mut header)
        .map_err(|e| format!("read the request header: {e}"))?;
    if n != 1 {
        return Err("the request has no header".into());
    }
    let mut buf = Vec::new();
    socket
        .read_to_end(&mut buf)
        .map_err(|e| format!("read the request: {e}"))?;
    let request: Request =
        serde_json::from_slice(&buf).map_err(|e| format!("parse the request: {e}"))?;
    let stdin = match request.stdio {
        StdioPlan::Attached { stdin: true, .. } => Some(
            fds.pop()
                .ok_or("the request's header carries no stdin descriptor")?,
        ),
        _ => None,
    };
    Ok((request, stdin))
}

fn send(socket: &mut File, report: &Report) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    line.push(b'\n');
    socket.write_all(&line)
}

fn run_helper(request: &Request, stdin: Option<OwnedFd>, socket: &mut File) -> Report {
    // Out of the caller's session, always: the caller's terminal sends its signals
    // (Ctrl-C) to the caller alone, which forwards or cancels; and a step without a
    // terminal of its own has no controlling terminal, so `/dev/tty` names nothing (a RUN
    // of an untrusted Dockerfile must not read or type into the user's terminal), as runc
    // makes it for BuildKit.
    let _ = nix::unistd::setsid();
    match start(request, stdin, socket) {
        Ok(report) => report,
        Err(message) => Report::Failed { message },
    }
}

/// Gives each prepared secret copy its owner, as ids of the sandbox (so, rootless, from
/// inside the user namespace: the caller could not give a host file to a subordinate id).
fn chown_secrets(request: &Request) -> Result<(), String> {
    let secrets = request.spec.mounts.iter().filter_map(|m| match m {
        ExtraMount::Secret {
            target, uid, gid, ..
        } => Some((target, uid.unwrap_or(0), gid.unwrap_or(0))),
        _ => None,
    });
    for (n, (target, uid, gid)) in secrets.enumerate() {
        let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
        userns::check_ids(request.userns.as_ref(), uid, &[gid])
            .map_err(|e| format!("secret {target}: {e}"))?;
        let copy = secret_copy(&request.tmp, n);
        nix::unistd::chown(&copy, Some(uid), Some(gid))
            .map_err(|e| format!("chown {} to {uid}:{gid}: {e}", copy.display()))?;
    }
    Ok(())
}

/// The network of one run while it lives: what [`Network::finish`] takes down.
enum Net {
    None,
    Veth(Veth),
    Slirp(Slirp),
}

impl Net {
    fn finish(self) {
        match self {
            Net::None => {}
            Net::Veth(veth) => veth.finish(),
            Net::Slirp(slirp) => slirp.finish(),
        }
    }
}

fn start(request: &Request, stdin: Option<OwnedFd>, socket: &mut File) -> Result<Report, String> {
    // Before any namespace: the host side of the network (root) or the outside process
    // that will run slirp4netns (rootless).
    let mut net = match &request.net {
        NetPlan::Veth => Net::Veth(Veth::prepare()?),
        NetPlan::Slirp { exe } => Net::Slirp(Slirp::fork(exe)?),
        NetPlan::Host | NetPlan::Loopback => Net::None,
    };
    let report = run_in_namespaces(request, stdin, socket, &mut net);
    net.finish();
    report
}

fn run_in_namespaces(
    request: &Request,
    stdin: Option<OwnedFd>,
    socket: &mut File,
    net: &mut Net,
) -> Result<Report, String> {
    let stdin: OwnedFd = match stdin {
        Some(fd) => fd,
        None => File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("open /dev/null: {e}"))?
            .into(),
    };
    // With a terminal, PID 1 makes the pty in the sandbox's own devpts and sends its
    // master here, to pass on to the caller (runc's console socket).
    let terminal = match request.stdio {
        StdioPlan::Attached {
            terminal: Some(size),
            ..
        } => {
            let (ours, theirs) = nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                None,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| format!("socketpair: {e}"))?;
            Some((ours, theirs, size))
        }
        _ => None,
    };
    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;

    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if request.net.own_namespace() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    match &request.userns {
        Some(ns) => ns.enter(flags)?,
        None => nix::sched::unshare(flags).map_err(|e| format!("unshare {flags:?}: {e}"))?,
    }
    match net {
        Net::Veth(veth) => veth.enter()?,
        Net::Slirp(slirp) => slirp.start()?,
        Net::None if request.net == NetPlan::Loopback => {
            linux::loopback_up().map_err(|e| format!("bring lo up: {e}"))?
        }
        Net::None => {}
    }
    chown_secrets(request)?;

    match linux::fork().map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(err_read);
            let terminal = terminal.map(|(ours, theirs, size)| {
                drop(ours);
                (theirs, size)
            });
            let err = crate::init::run(request, stdin, terminal);
            // Reached only when setup failed before exec.
            let mut pipe = File::from(err_write);
            let _ = pipe.write_all(err.as_bytes());
            std::process::exit(125);
        }
        ForkResult::Parent { child } => {
            drop(err_write);
            drop(stdin);
            send(
                socket,
                &Report::Started {
                    pid: child.as_raw(),
                },
            )
            .map_err(|e| format!("report the pid: {e}"))?;
            if let Some((ours, theirs, _)) = terminal {
                drop(theirs);
                // EOF without a descriptor: PID 1 failed before making the pty, and its
                // message follows on the error pipe.
                let mut byte = [0u8; 1];
                if let Ok((_, mut fds)) = linux::recv_with_fds(ours.as_fd(), &mut byte)
                    && let Some(master) = fds.pop()
                {
                    let mut line = serde_json::to_vec(&Report::Terminal)
                        .map_err(|e| format!("report the terminal: {e}"))?;
                    line.push(b'\n');
                    linux::send_with_fd(socket.as_fd(), &line, Some(master.as_fd()))
                        .map_err(|e| format!("send the terminal: {e}"))?;
                }
            }
            let mut message = String::new();
            let _ = File::from(err_read).read_to_string(&mut message);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other.map_err(|e| format!("waitpid: {e}"))?,
                }
            };
            if !message.is_empty() {
                return Ok(Report::Failed { message });
            }
            Ok(match status {
                WaitStatus::Exited(_, code) => Report::Exited { code },
                WaitStatus::Signaled(_, signal, _) => Report::Signaled {
                    signal: signal as i32,
                },
                other => Report::Failed {
                    message: format!("unexpected wait status {other:?}"),
                },
            })
        }
    }
}
