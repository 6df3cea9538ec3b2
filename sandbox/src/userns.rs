//! Rootless mode: the user namespace a sandbox runs in when kiln is not root.
//!
//! The caller is root inside (id 0 maps to its effective uid and gid). When `/etc/subuid`
//! and `/etc/subgid` grant it subordinate ranges, they follow as ids `1..`, so a `USER
//! 1000` runs as host uid `start + 999`; such maps are written by the setuid helpers
//! `newuidmap` and `newgidmap` (Debian package `uidmap`), the only programs kiln runs.
//! Without a range (or without those helpers) the map is the caller's own ids alone,
//! which the namespace may write itself after denying `setgroups`.
//!
//! Who writes the maps (util-linux `unshare --map-users` does the same): a map must be
//! written from outside the new namespace, so the helper forks a small *mapper* before
//! it unshares; once the helper is in its user namespace it wakes the mapper, which runs
//! `newuidmap`/`newgidmap` on the helper's pid and exits; the helper then unshares the
//! other namespaces and forks the command's PID 1 as usual.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

use crate::sys::linux;

/// Set to `1` to run in a user namespace even as root (tests, benchmarks).
pub const FORCE_ENV: &str = "KILN_ROOTLESS";

/// One line of `/proc/PID/uid_map` or `gid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id on the host.
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

/// The user namespace of a rootless run: its maps and who writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    /// Lines of the uid map; the first maps 0 to the caller.
    pub uid_map: Vec<IdRange>,
    /// Lines of the gid map; the first maps 0 to the caller's group.
    pub gid_map: Vec<IdRange>,
    /// `newuidmap` and `newgidmap`, when a map holds a subordinate range.
    pub map_helpers: Option<(PathBuf, PathBuf)>,
}

/// The caller, as far as the maps are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// The user's name in the host's passwd database, when it has one.
    pub name: Option<String>,
}

/// The kernel's limit on lines in an id map (`UID_GID_MAP_MAX_EXTENTS`).
const MAX_LINES: usize = 340;

impl UserNamespace {
    /// The namespace for a run started now: `None` when kiln is root (and [`FORCE_ENV`] is
    /// not `1`), otherwise maps from the host's `/etc/subuid` and `/etc/subgid` (missing
    /// files mean no ranges) and `newuidmap`/`newgidmap` found in `PATH`.
    pub fn detect() -> Option<UserNamespace> {
        let forced = std::env::var_os(FORCE_ENV).is_some_and(|v| v == "1");
        let uid = nix::unistd::geteuid();
        if uid.is_root() && !forced {
            return None;
        }
        let caller = Caller {
            uid: uid.as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            name: nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name),
        };
        let subuid = fs::read_to_string("/etc/subuid").unwrap_or_default();
        let subgid = fs::read_to_string("/etc/subgid").unwrap_or_default();
        let helpers = find_in_path("newuidmap").zip(find_in_path("newgidmap"));
        Some(UserNamespace::new(&caller, &subuid, &subgid, helpers))
    }

    /// The maps for `caller` given the text of `/etc/subuid` and `/etc/subgid`, and the
    /// map helpers if installed. Ranges are used only when the helpers are there.
    pub fn new(
        caller: &Caller,
        subuid: &str,
        subgid: &str,
        helpers: Option<(PathBuf, PathBuf)>,
    ) -> UserNamespace {
        let own = |id| IdRange {
            inside: 0,
            outside: id,
            count: 1,
        };
        let mut uid_map = vec![own(caller.uid)];
        let mut gid_map = vec![own(caller.gid)];
        if helpers.is_some() {
            uid_map.extend(subordinate(subuid, caller));
            gid_map.extend(subordinate(subgid, caller));
        }
        let map_helpers = helpers.filter(|_| uid_map.len() > 1 || gid_map.len() > 1);
        UserNamespace {
            uid_map,
            gid_map,
            map_helpers,
        }
    }

    /// Whether `uid` (inside) exists in the namespace.
    pub fn maps_uid(&self, uid: u32) -> bool {
        maps(&self.uid_map, uid)
    }

    /// Whether `gid` (inside) exists in the namespace.
    pub fn maps_gid(&self, gid: u32) -> bool {
        maps(&self.gid_map, gid)
    }

    /// Whether `setgroups(2)` works inside: `newgidmap` allows it when the map holds a
    /// subordinate range; a map the namespace writes itself must deny it first.
    pub fn setgroups_allowed(&self) -> bool {
        self.map_helpers.is_some() && self.gid_map.len() > 1
    }

    /// What to tell a user whose command needs an id outside the maps.
    pub fn unmapped_hint(&self, what: &str, id: u32) -> String {
        let last = |map: &[IdRange]| map.iter().map(|r| r.inside + (r.count - 1)).max();
        format!(
            "{what} {id} does not exist in the rootless sandbox's user namespace (it maps uids \
             0..={} and gids 0..={}): give the user running kiln a subordinate range of \
             65536 ids in /etc/subuid and /etc/subgid (`usermod --add-subuids 100000-165535 \
             --add-subgids 100000-165535 USER`) and install newuidmap/newgidmap (Debian \
             package uidmap), or run the step as root",
            last(&self.uid_map).unwrap_or(0),
            last(&self.gid_map).unwrap_or(0),
        )
    }

    /// Moves the calling process into a new user namespace with these maps, then into
    /// the new namespaces of `flags`. The caller must be single-threaded (the kernel
    /// refuses `CLONE_NEWUSER` otherwise, and this forks the mapper).
    pub(crate) fn enter(&self, flags: CloneFlags) -> Result<(), String> {
        match &self.map_helpers {
            Some(helpers) => self.enter_with_mapper(helpers)?,
            None => {
                unshare_user()?;
                self.write_own_maps()?;
            }
        }
        nix::sched::unshare(flags).map_err(|e| format!("unshare {flags:?}: {e}"))
    }

    /// The single-line maps of the caller's own ids, written from inside.
    fn write_own_maps(&self) -> Result<(), String> {
        let write = |file: &str, text: &str| {
            fs::write(Path::new("/proc/self").join(file), text)
                .map_err(|e| format!("write {text:?} to /proc/self/{file}: {e}"))
        };
        write("setgroups", "deny")?;
        write("uid_map", &map_text(&self.uid_map))?;
        write("gid_map", &map_text(&self.gid_map))
    }

    fn enter_with_mapper(&self, (newuidmap, newgidmap): &(PathBuf, PathBuf)) -> Result<(), String> {
        let target = nix::unistd::getpid();
        let (wake_read, wake_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let (err_read, err_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let mapper = match linux::fork().map_err(|e| format!("fork the id mapper: {e}"))? {
            ForkResult::Child => {
                drop(wake_write);
                drop(err_read);
                let code = match mapper(target, File::from(wake_read), newuidmap, newgidmap, self) {
                    Ok(()) => 0,
                    Err(message) => {
                        let _ = File::from(err_write).write_all(message.as_bytes());
                        1
                    }
                };
                std::process::exit(code)
            }
            ForkResult::Parent { child } => child,
        };
        drop(wake_read);
        drop(err_write);
        let unshared = unshare_user();
        let mut wake = File::from(wake_write);
        if unshared.is_ok() {
            // The mapper waits for this byte; on failure it sees EOF and leaves quietly.
            let _ = wake.write_all(b"x");
        }
        drop(wake);
        let mut message = String::new();
        let _ = File::from(err_read).read_to_string(&mut message);
        let status = wait(mapper)?;
        unshared?;
        match status {
            WaitStatus::Exited(_, 0) if message.is_empty() => Ok(()),
            _ if !message.is_empty() => Err(message),
            other => Err(format!("the id mapper ended with {other:?}")),
        }
    }
}

/// The mapper's whole life: wait for the helper to be in its namespace, map it, exit.
fn mapper(
    target: Pid,
    mut wake: File,
    newuidmap: &Path,
    newgidmap: &Path,
    ns: &UserNamespace,
) -> Result<(), String> {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let mut byte = [0u8; 1];
    if !matches!(wake.read(&mut byte), Ok(1)) {
        return Ok(());
    }
    let spawn = |tool: &Path, map: &[IdRange]| {
        let mut command = Command::new(tool);
        command.arg(target.to_string());
        for r in map {
            command.args([r.inside, r.outside, r.count].map(|n| n.to_string()));
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "run {}: {e}: install the Debian package uidmap, or remove the user's \
                     ranges from /etc/subuid and /etc/subgid to map only its own ids",
                    tool.display()
                )
            })
    };
    // Both at once: each is a setuid program that reads the passwd and subid files.
    let uids = spawn(newuidmap, &ns.uid_map)?;
    let gids = spawn(newgidmap, &ns.gid_map);
    let mut failures = Vec::new();
    for (tool, child) in [(newuidmap, Ok(uids)), (newgidmap, gids)] {
        let output = child?
            .wait_with_output()
            .map_err(|e| format!("wait for {}: {e}", tool.display()))?;
        if !output.status.success() {
            failures.push(format!(
                "{} {} failed ({}): {}",
                tool.display(),
                target,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}: check that /etc/subuid and /etc/subgid grant the ranges to this user (by name \
         or uid) and that kiln runs with the user's own primary group",
        failures.join("; ")
    ))
}

fn unshare_user() -> Result<(), String> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| {
        format!(
            "unshare a user namespace: {e}: rootless kiln needs unprivileged user \
             namespaces (sysctl user.max_user_namespaces > 0; on Debian before 11 \
             kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 \
             kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for kiln)"
        )
    })
}

fn wait(pid: Pid) -> Result<WaitStatus, String> {
    loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(|e| format!("wait for the id mapper: {e}")),
        }
    }
}

fn maps(map: &[IdRange], id: u32) -> bool {
    map.iter()
        .any(|r| id >= r.inside && id - r.inside < r.count)
}

/// The text the kernel expects in `uid_map`/`gid_map`.
pub fn map_text(map: &[IdRange]) -> String {
    map.iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// The caller's ranges in the text of `/etc/subuid` or `/etc/subgid` (`owner:start:count`
/// lines, the owner a name or a uid), placed one after another from inside id 1.
fn subordinate(text: &str, caller: &Caller) -> Vec<IdRange> {
    let mut next: u32 = 1;
    let mut ranges = Vec::new();
    for line in text.lines() {
        let mut fields = line.trim().splitn(3, ':');
        let (Some(owner), Some(start), Some(count)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let is_caller =
            owner.parse::<u32>().ok() == Some(caller.uid) || caller.name.as_deref() == Some(owner);
        let (Ok(start), Ok(count)) = (start.parse::<u32>(), count.trim().parse::<u32>()) else {
            continue;
        };
        if !is_caller || count == 0 || start.checked_add(count - 1).is_none() {
            continue;
        }
        let Some(end) = next.checked_add(count - 1) else {
            break;
        };
        ranges.push(IdRange {
            inside: next,
            outside: start,
            count,
        });
        if ranges.len() + 1 >= MAX_LINES || end == u32::MAX {
            break;
        }
        next = end + 1;
    }
    ranges
}

/// `program` in the caller's `PATH` (a standard one when unset).
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether `uid`/`gid` exist in `ns` (always when there is no user namespace).
pub(crate) fn check_ids(ns: Option<&UserNamespace>, uid: Uid, gids: &[Gid]) -> Result<(), String> {
    let Some(ns) = ns else {
        return Ok(());
    };
    if !ns.maps_uid(uid.as_raw()) {
        return Err(ns.unmapped_hint("uid", uid.as_raw()));
    }
    match gids.iter().find(|g| !ns.maps_gid(g.as_raw())) {
        Some(gid) => Err(ns.unmapped_hint("gid", gid.as_raw())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBIDS: &str = "# comment\nbob:200000:65536\nalice:100000:65536\n1000:300000:10\n\
                          alice:bad:1\nalice:5:0\nbroken\n";

    /// Checks the uid map text for `alice` (uid 1000) with and without the map helpers.
    fn check(subids: &str, helpers: bool, expected: &str) {
        let caller = Caller {
            uid: 1000,
            gid: 1000,
            name: Some("alice".into()),
        };
        let helpers = helpers.then(|| ("/usr/bin/newuidmap".into(), "/usr/bin/newgidmap".into()));
        let ns = UserNamespace::new(&caller, subids, subids, helpers);
        assert_eq!(map_text(&ns.uid_map), expected, "{subids:?}");
        assert_eq!(ns.uid_map, ns.gid_map);
        assert_eq!(ns.map_helpers.is_some(), ns.uid_map.len() > 1);
    }

    #[test]
    fn maps_the_caller_then_its_ranges() {
        check(SUBIDS, true, "0 1000 1\n1 100000 65536\n65537 300000 10\n");
        check(SUBIDS, false, "0 1000 1\n");
        check("", true, "0 1000 1\n");
        check("bob:200000:65536\n", true, "0 1000 1\n");
        check("alice:4294967295:2\n", true, "0 1000 1\n");
    }

    #[test]
    fn knows_which_ids_exist() {
        let caller = Caller {
            uid: 1000,
            gid: 1000,
            name: None,
        };
        let helpers = Some(("u".into(), "g".into()));
        let ranged = UserNamespace::new(&caller, "1000:100000:65536", "", helpers);
        assert!(ranged.maps_uid(0) && ranged.maps_uid(1000) && ranged.maps_uid(65536));
        assert!(!ranged.maps_uid(65537));
        assert!(ranged.maps_gid(0) && !ranged.maps_gid(5));
        assert!(!ranged.setgroups_allowed());
        let alone = UserNamespace::new(&caller, "", "", None);
        assert!(alone.maps_uid(0) && !alone.maps_uid(1));
        assert!(alone.map_helpers.is_none());
        let hint = alone.unmapped_hint("uid", 1000);
        assert!(
            hint.contains("uids 0..=0") && hint.contains("/etc/subuid"),
            "{hint}"
        );
    }
}
