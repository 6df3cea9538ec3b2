//! Performs a mount [`plan`](crate::plan) through a [`Sys`], resolving every in-sandbox
//! path under the new root with symlinks confined to it.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;

use crate::plan::{Create, Flags, Step};
use crate::spec::Mount;
use crate::sys::Sys;

/// Above this many bytes of options, overlay goes through the new mount API (one
/// `fsconfig` per option) instead of `mount(2)`, whose data is limited to one page.
const MOUNT_DATA_LIMIT: usize = 4000;

/// Runs `steps` with `root` as the new root directory (an empty directory on the host).
/// Errors name the step.
pub fn perform(sys: &dyn Sys, root: &Path, steps: &[Step]) -> Result<(), String> {
    for step in steps {
        perform_step(sys, root, step).map_err(|err| format!("{step:?}: {err}{}", hint(step)))?;
    }
    Ok(())
}

/// What to do when `step` fails, where the kernel's errno alone does not say.
fn hint(step: &Step) -> &'static str {
    match step {
        Step::Rootfs(m) if m.kind == "overlay" && m.options.iter().any(|o| o == "userxattr") => {
            ": overlay in a user namespace (rootless) needs Linux >= 5.11 (`userxattr`) and \
             upper and work dirs owned by the user running kiln; otherwise use a copy-based \
             rootfs (one bind mount)"
        }
        Step::ReadonlyTree { .. } => {
            ": binding the host's /sys read-only needs Linux >= 5.12 (mount_setattr); \
             with network none the sandbox mounts its own sysfs instead"
        }
        _ => "",
    }
}

fn perform_step(sys: &dyn Sys, root: &Path, step: &Step) -> io::Result<()> {
    match step {
        Step::MakePrivate => sys.mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        ),
        Step::Rootfs(mount) => rootfs_mount(sys, root, mount),
        Step::Fs {
            fstype,
            target,
            flags,
            data,
        } => {
            let target = resolve(root, target, Some(Create::Dir))?;
            let data = (!data.is_empty()).then_some(data.as_str());
            sys.mount(
                Some(Path::new(fstype)),
                &target,
                Some(fstype),
                ms_flags(*flags),
                data,
            )
        }
        Step::Bind {
            source,
            target,
            create,
            readonly,
        } => {
            let target = resolve(root, target, Some(*create))?;
            bind(sys, source, &target, *readonly)
        }
        Step::Symlink { to, link } => {
            let link = resolve(root, link, None)?;
            std::os::unix::fs::symlink(to, link)
        }
        Step::Mask(path) => {
            let path = resolve(root, path, None)?;
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => sys.mount(
                    Some(Path::new("tmpfs")),
                    &path,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    Some("size=0,mode=555"),
                ),
                Ok(_) => bind(sys, Path::new("/dev/null"), &path, true),
                Err(_) => Ok(()),
            }
        }
        Step::ReadonlyPath(path) => {
            let path = resolve(root, path, None)?;
            if fs::symlink_metadata(&path).is_err() {
                return Ok(());
            }
            bind(sys, &path, &path, true)
        }
        Step::ReadonlyTree { source, target } => {
            let target = resolve(root, target, Some(Create::Dir))?;
            sys.mount(
                Some(source),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            sys.set_readonly_recursive(&target)
        }
        Step::PivotRoot => sys.pivot_root(root),
    }
}

fn ms_flags(flags: Flags) -> MsFlags {
    let mut ms = MsFlags::empty();
    ms.set(MsFlags::MS_RDONLY, flags.readonly);
    ms.set(MsFlags::MS_NOSUID, flags.nosuid);
    ms.set(MsFlags::MS_NODEV, flags.nodev);
    ms.set(MsFlags::MS_NOEXEC, flags.noexec);
    ms
}

fn bind(sys: &dyn Sys, source: &Path, target: &Path, readonly: bool) -> io::Result<()> {
    sys.mount(
        Some(source),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    if readonly {
        // A bind mount ignores MS_RDONLY; it takes a remount. Keep the flags the kernel may
        // have locked on the source (in a user namespace, every mount copied from the host)
        // so the remount is allowed, the access-time mode included.
        let locked = nix::sys::statvfs::statvfs(target)
            .map(|s| {
                let f = s.flags();
                let mut ms = MsFlags::empty();
                use nix::sys::statvfs::FsFlags;
                ms.set(MsFlags::MS_NOSUID, f.contains(FsFlags::ST_NOSUID));
                ms.set(MsFlags::MS_NODEV, f.contains(FsFlags::ST_NODEV));
                ms.set(MsFlags::MS_NOEXEC, f.contains(FsFlags::ST_NOEXEC));
                ms.set(MsFlags::MS_NOATIME, f.contains(FsFlags::ST_NOATIME));
                ms.set(MsFlags::MS_NODIRATIME, f.contains(FsFlags::ST_NODIRATIME));
                ms.set(MsFlags::MS_RELATIME, f.contains(FsFlags::ST_RELATIME));
                if !f.intersects(FsFlags::ST_NOATIME | FsFlags::ST_RELATIME) {
                    ms |= MsFlags::MS_STRICTATIME;
                }
                ms
            })
            .unwrap_or(MsFlags::empty());
        sys.mount(
            None,
            target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
            None,
        )?;
    }
    Ok(())
}

/// Flag words of mount options; the rest is filesystem data.
fn split_options(options: &[String]) -> (MsFlags, bool, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut bind = false;
    let mut data = Vec::new();
    for option in options {
        match option.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                flags |= MsFlags::MS_REC;
            }
            _ => data.push(option.clone()),
        }
    }
    (flags, bind, data)
}

fn rootfs_mount(sys: &dyn Sys, root: &Path, mount: &Mount) -> io::Result<()> {
    let target = resolve(root, &mount.target, Some(Create::Dir))?;
    let (flags, bind_opt, data) = split_options(&mount.options);
    if mount.kind == "bind" || bind_opt {
        let readonly = flags.contains(MsFlags::MS_RDONLY);
        return bind(sys, Path::new(&mount.source), &target, readonly);
    }
    let joined = data.join(",");
    if joined.len() > MOUNT_DATA_LIMIT {
        let mut options: Vec<String> = Vec::new();
        for option in &data {
            match option.strip_prefix("lowerdir=") {
                // The new API appends layers one at a time: no page limit.
                Some(lowers) => options.extend(lowers.split(':').map(|l| format!("lowerdir+={l}"))),
                None => options.push(option.clone()),
            }
        }
        if flags.contains(MsFlags::MS_RDONLY) {
            options.push("ro".to_owned());
        }
        return sys.mount_fsconfig(&mount.kind, &mount.source, &target, &options);
    }
    sys.mount(
        Some(Path::new(&mount.source)),
        &target,
        Some(&mount.kind),
        flags,
        (!joined.is_empty()).then_some(joined.as_str()),
    )
}

/// Resolves `path` (absolute, inside the sandbox) to a host path under `root`, following
/// symlinks as if `root` were `/` (`..` stops at `root`), then creates what `create` asks
/// for when the result is missing. A rootfs symlink can thus never send a mount or a
/// created mount point outside the rootfs.
pub fn resolve(root: &Path, path: &str, create: Option<Create>) -> io::Result<PathBuf> {
    let mut resolved = root.to_path_buf();
    let mut pending: Vec<std::ffi::OsString> = components(Path::new(path));
    pending.reverse();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if resolved != root {
                resolved.pop();
            }
            continue;
        }
        let next = resolved.join(&name);
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs::read_link(&next)?;
                if target.is_absolute() {
                    resolved = root.to_path_buf();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            Ok(meta) if !meta.is_dir() && !pending.is_empty() => {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            Ok(_) => resolved = next,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let Some(create) = create else {
                    resolved = next;
                    continue;
                };
                let is_last = pending.is_empty();
                if is_last && create == Create::File {
                    fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&next)?;
                } else {
                    match fs::DirBuilder::new().mode(0o755).create(&next) {
                        // Another sandbox on the same rootfs made it meanwhile: look at
                        // what is there now (it could be a symlink) like any other entry.
                        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                            pending.push(name);
                            continue;
                        }
                        other => other?,
                    }
                }
                resolved = next;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(resolved)
}

fn components(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, Fake};

    /// Resolves `path` in a root holding `links` (link, target) and checks the result
    /// relative to the root.
    fn check(links: &[(&str, &str)], path: &str, create: Option<Create>, expected: &str) {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).expect("mkdir");
        for (link, to) in links {
            std::os::unix::fs::symlink(to, root.join(link)).expect("symlink");
        }
        let got = resolve(root, path, create).expect("resolve");
        assert_eq!(got, root.join(expected), "{path}");
        if create.is_some() {
            assert!(got.exists(), "{} created", got.display());
        }
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        check(&[], "/etc/hosts", None, "etc/hosts");
        check(&[("proc", "/")], "/proc", None, "");
        check(&[("x", "../../../../tmp")], "/x/y", None, "tmp/y");
        check(
            &[("lnk", "/etc")],
            "/lnk/hosts",
            Some(Create::File),
            "etc/hosts",
        );
        check(&[], "/../../a/b", Some(Create::Dir), "a/b");
        check(
            &[("d", "etc/../../..")],
            "/d/new",
            Some(Create::File),
            "new",
        );
    }

    #[test]
    fn a_readonly_tree_is_bound_then_locked_down_recursively() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fake = Fake::default();
        let step = Step::ReadonlyTree {
            source: "/sys".into(),
            target: "/sys".into(),
        };
        perform(&fake, dir.path(), &[step]).expect("perform");
        let target = dir.path().join("sys");
        assert!(target.is_dir(), "mount point created");
        assert_eq!(
            *fake.calls.borrow(),
            [
                Call::Mount {
                    source: Some("/sys".into()),
                    target: target.clone(),
                    fstype: None,
                    flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                    data: None,
                },
                Call::ReadonlyRecursive(target),
            ]
        );
    }

    #[test]
    fn long_overlay_options_use_the_new_mount_api() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lowers: Vec<String> = (0..300)
            .map(|i| format!("/var/lib/kiln/snapshots/{i:020}/fs"))
            .collect();
        let mount = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: "/".into(),
            options: vec![
                format!("lowerdir={}", lowers.join(":")),
                "upperdir=/u".into(),
                "workdir=/w".into(),
            ],
        };
        let fake = Fake::default();
        perform(&fake, dir.path(), &[Step::Rootfs(mount)]).expect("perform");
        let calls = fake.calls.borrow();
        let Some(Call::Fsconfig { options, .. }) = calls.first() else {
            panic!("expected fsconfig, got {calls:?}");
        };
        assert_eq!(options.len(), 302);
        assert_eq!(options[0], format!("lowerdir+={}", lowers[0]));
        assert_eq!(options[301], "workdir=/w");
    }
}
