//! What the sandbox's PID 1 does between fork and exec: mounts, pivot_root, hostname,
//! rlimits, user, capabilities, no_new_privs, seccomp, cwd, then execve.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid};

use crate::helper::Request;
use crate::plan::{Create, EtcFiles, Rootless, plan};
use crate::spec::{DEFAULT_PATH, ExtraMount};
use crate::sys::linux::{self, Linux, WindowSize};
use crate::{caps, rlimit, seccomp, setup, user, userns};

/// The run's temp-dir layout, shared by the parent (which fills it) and the helper.
pub(crate) fn etc_files(tmp: &Path) -> EtcFiles {
    EtcFiles {
        hosts: tmp.join("hosts"),
        resolv_conf: tmp.join("resolv.conf"),
        hostname: tmp.join("hostname"),
    }
}

/// The prepared copy of the n-th secret.
pub(crate) fn secret_copy(tmp: &Path, n: usize) -> PathBuf {
    tmp.join(format!("secret-{n}"))
}

/// Sets everything up and execs; returns only on failure, with the message. `stdin`
/// becomes the command's fd 0; with a `terminal` (the socket to send the pty's master
/// on, and the window size), a pty made in the sandbox's devpts is its 0, 1 and 2 and
/// its controlling terminal instead.
pub(crate) fn run(
    request: &Request,
    stdin: OwnedFd,
    terminal: Option<(OwnedFd, WindowSize)>,
) -> String {
    match setup_and_exec(request, stdin, terminal) {
        Ok(never) => match never {},
        Err(message) => message,
    }
}

enum Never {}

/// Opens a pty in the sandbox's `/dev/pts` (after `pivot_root`), sizes it, gives the
/// slave to `owner` and sends the master on `socket`; returns the slave.
fn open_terminal(socket: OwnedFd, size: WindowSize, owner: Uid) -> Result<OwnedFd, String> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags).map_err(|e| format!("open /dev/ptmx: {e}"))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave: OwnedFd = fs::File::options()
        .read(true)
        .write(true)
        .custom_flags((OFlag::O_NOCTTY | OFlag::O_CLOEXEC).bits())
        .open(&name)
        .map_err(|e| format!("open {name}: {e}"))?
        .into();
    linux::set_window_size(slave.as_fd(), size).map_err(|e| format!("size {name}: {e}"))?;
    nix::unistd::fchown(&slave, Some(owner), None)
        .map_err(|e| format!("chown {name} to {owner}: {e}"))?;
    linux::send_with_fd(socket.as_fd(), b"t", Some(master.as_fd()))
        .map_err(|e| format!("send the pty: {e}"))?;
    Ok(slave)
}

fn setup_and_exec(
    request: &Request,
    stdin: OwnedFd,
    terminal: Option<(OwnedFd, WindowSize)>,
) -> Result<Never, String> {
    let spec = &request.spec;
    let root = request.tmp.join("root");
    let secrets: Vec<PathBuf> = spec
        .mounts
        .iter()
        .filter(|m| matches!(m, ExtraMount::Secret { .. }))
        .enumerate()
        .map(|(n, _)| secret_copy(&request.tmp, n))
        .collect();
    let rootless = request.userns.as_ref().map(|ns| Rootless {
        tty_gid_mapped: ns.maps_gid(5),
    });
    let steps = plan(spec, &etc_files(&request.tmp), &secrets, rootless);
    setup::perform(&Linux, &root, &steps)?;

    nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname: {e}"))?;
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let exec_user = user::resolve(&spec.user, &passwd, &group)?;

    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    let cwd_path = setup::resolve(Path::new("/"), cwd, Some(Create::Dir))
        .map_err(|e| format!("create the working directory {cwd}: {e}"))?;
    nix::unistd::chdir(&cwd_path).map_err(|e| format!("chdir {cwd}: {e}"))?;

    rlimit::apply()?;
    caps::drop_bounding()?;
    nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("keepcaps: {e}"))?;
    let uid = Uid::from_raw(exec_user.uid);
    let gid = Gid::from_raw(exec_user.gid);
    let groups: Vec<Gid> = exec_user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    // A user namespace that maps only the caller's own ids must deny setgroups(2): the
    // command keeps the caller's supplementary groups (its own group as 0, the others as
    // nogroup).
    let userns = request.userns.as_ref();
    let set_groups = userns.is_none_or(|ns| ns.setgroups_allowed());
    let needed: Vec<Gid> = match set_groups {
        true => groups.iter().copied().chain([gid]).collect(),
        false => vec![gid],
    };
    userns::check_ids(userns, uid, &needed).map_err(|e| format!("user {:?}: {e}", spec.user))?;
    let tty = match terminal {
        Some((socket, size)) => Some(open_terminal(socket, size, uid)?),
        None => None,
    };
    if set_groups {
        nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    }
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid {gid}: {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid {uid}: {e}"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("keepcaps: {e}"))?;
    caps::set_default()?;
    // The uid change cleared the parent-death signal; the helper outside must still be
    // able to take us down.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("pdeathsig: {e}"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;

    let mut env: Vec<String> = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", exec_user.home));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_owned();
    let argv = to_cstrings(&spec.argv)?;
    let envp = to_cstrings(&env)?;
    let program = spec.argv.first().ok_or("empty argv")?;
    let exe = lookup(program, &path_var);

    linux::reset_signals().map_err(|e| format!("reset signals: {e}"))?;
    match &tty {
        Some(slave) => {
            // Its own session with the pty as controlling terminal: job control, and
            // Ctrl-C reaching the foreground process group inside.
            nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
            linux::set_controlling_terminal(slave.as_fd())
                .map_err(|e| format!("controlling terminal: {e}"))?;
            nix::unistd::dup2_stdin(slave).map_err(|e| format!("stdin: {e}"))?;
            nix::unistd::dup2_stdout(slave).map_err(|e| format!("stdout: {e}"))?;
            nix::unistd::dup2_stderr(slave).map_err(|e| format!("stderr: {e}"))?;
        }
        None => nix::unistd::dup2_stdin(stdin.as_fd()).map_err(|e| format!("stdin: {e}"))?,
    }
    drop(tty);
    drop(stdin);
    // Again, right before exec: whatever was opened since the helper started (by a
    // library, say) closes here too, so the command starts with 0, 1 and 2 only.
    linux::cloexec_from_3().map_err(|e| format!("close inherited fds: {e}"))?;
    seccomp::install()?;
    let err = match &exe {
        Some(exe) => match nix::unistd::execve(exe, &argv, &envp) {
            Ok(never) => match never {},
            Err(err) => err,
        },
        None => nix::errno::Errno::ENOENT,
    };
    // The command could not start: report it as a shell would, on the command's stderr.
    eprintln!("kiln: exec {program}: {}", err.desc());
    let code = if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    std::process::exit(code)
}

fn to_cstrings(items: &[String]) -> Result<Vec<CString>, String> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| format!("NUL byte in {s:?}")))
        .collect()
}

/// Finds `program` in `path` (the command's `PATH`, not kiln's) as execvp would.
fn lookup(program: &str, path: &str) -> Option<CString> {
    if program.contains('/') {
        return CString::new(program).ok();
    }
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok())
}
