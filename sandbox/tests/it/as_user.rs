//! Runs a spec as an unprivileged host user: this test binary, copied where the user can
//! execute it, is started through `setpriv` with the spec as JSON in [`SPEC_ENV`]; it runs
//! the sandbox (rootless: it is not root) and prints a [`Remote`] outcome as JSON.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use kiln_sandbox::{CancelHandle, Spec, Stream};
use serde::{Deserialize, Serialize};

/// Holds the spec for a remote run.
const SPEC_ENV: &str = "KILN_IT_SPEC";

/// A run's outcome as the remote side reports it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Remote {
    /// The exit code (128 + signal after a signal), when the run produced one.
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// The sandbox's error, when it failed before an exit status.
    pub(crate) error: Option<String>,
}

/// When started as the remote side, run the spec, print the outcome and return.
pub(crate) fn run_if_requested() -> Option<ExitCode> {
    let json = std::env::var(SPEC_ENV).ok()?;
    let spec: Spec = match serde_json::from_str(&json) {
        Ok(spec) => spec,
        Err(err) => {
            eprintln!("bad {SPEC_ENV}: {err}");
            return Some(ExitCode::FAILURE);
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let result = kiln_sandbox::run(
        &spec,
        &mut |stream, line| match stream {
            Stream::Stdout => stdout.extend_from_slice(line),
            Stream::Stderr => stderr.extend_from_slice(line),
        },
        &CancelHandle::new(),
    );
    let remote = Remote {
        code: result.as_ref().ok().map(|s| s.code()),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        error: result.err().map(|e| e.to_string()),
    };
    let json = serde_json::to_vec(&remote).expect("outcome as JSON");
    match std::io::stdout().write_all(&json) {
        Ok(()) => Some(ExitCode::SUCCESS),
        Err(_) => Some(ExitCode::FAILURE),
    }
}

/// A host user for the tests, made on first use.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) name: &'static str,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// `(start, count)` from `/etc/subuid` and `/etc/subgid`.
    pub(crate) subuid: Option<(u32, u32)>,
    pub(crate) subgid: Option<(u32, u32)>,
}

/// The user with a subordinate range.
pub(crate) const RANGED: &str = "kilntest";
/// The user without one.
pub(crate) const ALONE: &str = "kilntest-norange";

/// Why rootless runs cannot be tested here, if they cannot.
pub(crate) fn unavailable() -> Option<String> {
    let read = |path: &str| fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some("user namespaces are disabled (user.max_user_namespaces = 0)".into());
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some("kernel.unprivileged_userns_clone = 0".into());
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Some("kernel.apparmor_restrict_unprivileged_userns = 1".into());
    }
    for tool in ["/usr/sbin/useradd", "/usr/sbin/usermod", "/usr/bin/setpriv"] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is missing"));
        }
    }
    None
}

/// The user `name` (`RANGED` or `ALONE`), created when missing, or a reason to skip.
pub(crate) fn user(name: &'static str) -> Result<User, String> {
    if let Some(reason) = unavailable() {
        return Err(reason);
    }
    let ranged = name == RANGED;
    if ranged && !Path::new("/usr/bin/newuidmap").exists() {
        return Err("newuidmap is missing (apt-get install uidmap)".into());
    }
    if nix::unistd::User::from_name(name).ok().flatten().is_none() {
        let mut useradd = Command::new("/usr/sbin/useradd");
        useradd.args(["-M", "-s", "/usr/sbin/nologin"]);
        if !ranged {
            useradd.args(["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]);
        }
        sh(useradd.arg(name))?;
    }
    for (file, flag) in [("/etc/subuid", "uids"), ("/etc/subgid", "gids")] {
        match (range_of(file, name), ranged) {
            (None, true) => {
                let start = free_start(file);
                sh(Command::new("/usr/sbin/usermod")
                    .arg(format!("--add-sub{flag}"))
                    .arg(format!("{start}-{}", start + 65535))
                    .arg(name))?;
            }
            (Some((start, count)), false) => {
                sh(Command::new("/usr/sbin/usermod")
                    .arg(format!("--del-sub{flag}"))
                    .arg(format!("{start}-{}", start + count - 1))
                    .arg(name))?;
            }
            _ => {}
        }
    }
    let entry = nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| format!("user {name} missing after useradd"))?;
    Ok(User {
        name,
        uid: entry.uid.as_raw(),
        gid: entry.gid.as_raw(),
        subuid: range_of("/etc/subuid", name),
        subgid: range_of("/etc/subgid", name),
    })
}

fn sh(command: &mut Command) -> Result<(), String> {
    let out = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The first `name:start:count` line of a subid file (parsed here, independently of the
/// crate's parser).
fn range_of(file: &str, name: &str) -> Option<(u32, u32)> {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        Some((f.next()?.parse().ok()?, f.next()?.trim().parse().ok()?))
    })
}

/// A start above every range in `file`.
fn free_start(file: &str) -> u64 {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(f.get(1)?.parse::<u64>().ok()? + f.get(2)?.trim().parse::<u64>().ok()?)
        })
        .max()
        .unwrap_or(100_000)
        .max(100_000)
}

/// Gives `path` and everything under it (links themselves, not their targets) to `user`.
pub(crate) fn chown_tree(path: &Path, user: &User) {
    std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)).expect("lchown");
    if fs::symlink_metadata(path).expect("stat").is_dir() {
        for entry in fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("entry").path(), user);
        }
    }
}

/// A copy of this test binary in `dir` that any user may run.
pub(crate) fn copy_of_self(dir: &Path) -> PathBuf {
    let exe = dir.join("kiln-sandbox-it");
    fs::copy(std::env::current_exe().expect("current exe"), &exe).expect("copy the test binary");
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).expect("chmod");
    exe
}

/// Runs `spec` through `exe` as `user` (`None`: as root, with `KILN_ROOTLESS=1`).
pub(crate) fn run(exe: &Path, user: Option<&User>, spec: &Spec) -> Remote {
    let who = match user {
        Some(user) => Who::User(user),
        None => Who::ForcedRootless,
    };
    run_in(exe, who, spec, None)
}

/// Who runs a remote spec.
pub(crate) enum Who<'a> {
    /// This unprivileged user (rootless).
    User(&'a User),
    /// Root with `KILN_ROOTLESS=1`.
    ForcedRootless,
    /// Root, as root.
    Root,
}

/// [`run`], in the network namespace of process `netns` when given (through `nsenter`).
pub(crate) fn run_in(exe: &Path, who: Who<'_>, spec: &Spec, netns: Option<u32>) -> Remote {
    let json = serde_json::to_string(spec).expect("spec as JSON");
    let user = match &who {
        Who::User(user) => Some(*user),
        _ => None,
    };
    let mut command = match who {
        Who::User(user) => {
            let mut c = Command::new("/usr/bin/setpriv");
            c.arg(format!("--reuid={}", user.uid))
                .arg(format!("--regid={}", user.gid))
                .arg("--init-groups")
                .arg(exe)
                .env_remove(kiln_sandbox::userns::FORCE_ENV);
            c
        }
        Who::ForcedRootless => {
            let mut c = Command::new(exe);
            c.env(kiln_sandbox::userns::FORCE_ENV, "1");
            c
        }
        Who::Root => {
            let mut c = Command::new(exe);
            c.env_remove(kiln_sandbox::userns::FORCE_ENV);
            c
        }
    };
    if let Some(pid) = netns {
        let mut wrapped = Command::new("nsenter");
        wrapped
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        command = wrapped;
    }
    let out = command
        .env(SPEC_ENV, json)
        .env_remove(kiln_sandbox::helper::MARKER_ENV)
        .output()
        .expect("start the remote run");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "remote run as {user:?} ({}): {err}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
