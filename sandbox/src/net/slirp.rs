//! A rootless sandbox's network: `slirp4netns` run from outside the sandbox's user and
//! network namespaces.
//!
//! It must run in the host's namespaces, as the caller, so the helper forks a small
//! *outside* process before it unshares (as it does for the id mapper). Once the helper is
//! in its namespaces it writes a byte; the outside process starts `slirp4netns` on the
//! helper's pid ([`super::slirp_args`]), waits for its ready byte and answers `ok` or the
//! error. It then holds `slirp4netns`'s `--exit-fd` (its stdin) until the helper closes the
//! control pipe (or dies: the outside process has a parent-death signal, and the exit fd
//! closes with it), and waits for `slirp4netns` to end.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

use crate::sys::linux;

/// The helper's side of the outside process.
#[derive(Debug)]
pub(crate) struct Slirp {
    child: Pid,
    control: Option<File>,
    answer: Option<File>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

impl Slirp {
    /// Forks the outside process; call before unsharing anything.
    pub(crate) fn fork(exe: &Path) -> Result<Slirp, String> {
        let target = nix::unistd::getpid();
        let (control_read, control_write) = pipe()?;
        let (answer_read, answer_write) = pipe()?;
        match linux::fork().map_err(|e| format!("fork the network helper: {e}"))? {
            ForkResult::Child => {
                drop(control_write);
                drop(answer_read);
                let code = outside(
                    exe,
                    target,
                    File::from(control_read),
                    File::from(answer_write),
                );
                std::process::exit(code)
            }
            ForkResult::Parent { child } => Ok(Slirp {
                child,
                control: Some(File::from(control_write)),
                answer: Some(File::from(answer_read)),
            }),
        }
    }

    /// Once the helper is in its network namespace: starts `slirp4netns` and waits
    /// until the namespace's `tap0` is configured.
    pub(crate) fn start(&mut self) -> Result<(), String> {
        let control = self.control.as_mut().ok_or("slirp4netns started twice")?;
        control
            .write_all(b"x")
            .map_err(|e| format!("wake the network helper: {e}"))?;
        let mut answer = String::new();
        if let Some(mut file) = self.answer.take() {
            let _ = file.read_to_string(&mut answer);
        }
        match answer.as_str() {
            "ok" => Ok(()),
            "" => Err("the network helper ended without starting slirp4netns".into()),
            message => Err(message.to_owned()),
        }
    }

    /// Stops `slirp4netns` and waits for the outside process.
    pub(crate) fn finish(mut self) {
        drop(self.control.take());
        drop(self.answer.take());
        while let Err(nix::errno::Errno::EINTR) = waitpid(self.child, None) {}
    }
}

/// The outside process's whole life; returns its exit code.
fn outside(exe: &Path, target: Pid, mut control: File, mut answer: File) -> i32 {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let mut byte = [0u8; 1];
    if !matches!(control.read(&mut byte), Ok(1)) {
        return 0;
    }
    let spawned = Command::new(exe)
        .args(super::slirp_args(target.as_raw()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = answer.write_all(
                format!(
                    "run {}: {e}: install slirp4netns (Debian package slirp4netns) for the \
                     rootless default network, or build with --network none",
                    exe.display()
                )
                .as_bytes(),
            );
            return 1;
        }
    };
    let exit_fd = child.stdin.take();
    let mut ready = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_end(&mut ready);
    }
    if ready.ends_with(b"1") {
        let _ = answer.write_all(b"ok");
        drop(answer);
        // Until the helper is done (EOF) or gone (our death signal).
        let _ = control.read(&mut byte);
        drop(exit_fd);
        let _ = child.wait();
        return 0;
    }
    drop(exit_fd);
    let status = child.wait();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let hint = if stderr.contains("/dev/net/tun") {
        ": slirp4netns needs /dev/net/tun readable and writable by the user running kiln \
         (crw-rw-rw-, Debian's default: `chmod 0666 /dev/net/tun`)"
    } else {
        ""
    };
    let _ = answer.write_all(
        format!(
            "{} {} failed ({}): {}{hint}",
            exe.display(),
            target,
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string()),
            stderr.trim()
        )
        .as_bytes(),
    );
    1
}
