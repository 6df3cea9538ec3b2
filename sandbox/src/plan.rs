//! The mount plan: a [`Spec`] turned into an ordered list of [`Step`]s, plain data, built
//! without touching the system (unit-tested without root) and then performed by
//! [`crate::setup`] inside the sandbox's private mount namespace.
//!
//! Paths in steps are absolute paths *inside* the sandbox; the executor resolves them under
//! the new root with symlinks confined to it, so a hostile rootfs cannot redirect a mount
//! or a created mount point onto the host.
//!
//! Mount points the sandbox may create in the rootfs when they are missing (so the caller
//! removes them after the step unless the step itself wrote there, as kiln's solver and
//! BuildKit's mount-stub cleaner do):
//! [`CREATED_MOUNT_POINTS`] plus the targets of extra mounts. Everything else mounted here
//! (`/dev/*`, `/proc/*` masks) lives on tmpfs or procfs and never reaches the upper dir.

use std::path::PathBuf;

use crate::spec::{ExtraMount, Mount, Network, Spec};

/// Paths that may appear in the rootfs's upper dir as empty mount points after a run when
/// the rootfs lacked them: directories `/proc`, `/dev`, `/sys`, `/etc`, and empty files
/// `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`.
pub const CREATED_MOUNT_POINTS: &[&str] = &[
    "/proc",
    "/dev",
    "/sys",
    "/etc",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/hostname",
];

/// What to create at a mount point that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// A directory (with parents).
    Dir,
    /// An empty file (with parent directories).
    File,
}

/// Mount flags the plan uses, kept as data rather than `nix` bitflags so plans compare
/// and print plainly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// `MS_RDONLY`
    pub readonly: bool,
    /// `MS_NOSUID`
    pub nosuid: bool,
    /// `MS_NODEV`
    pub nodev: bool,
    /// `MS_NOEXEC`
    pub noexec: bool,
}

const SECURE: Flags = Flags {
    readonly: false,
    nosuid: true,
    nodev: true,
    noexec: true,
};

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make every mount in the new namespace private, so nothing propagates to the host.
    MakePrivate,
    /// One of the rootfs's mounts, onto the new root plus its target.
    Rootfs(Mount),
    /// A new filesystem instance.
    Fs {
        /// Filesystem type (`proc`, `tmpfs` ...).
        fstype: &'static str,
        /// Path inside the sandbox.
        target: String,
        /// Flags.
        flags: Flags,
        /// Filesystem options.
        data: String,
    },
    /// A bind mount of a host path.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path inside the sandbox.
        target: String,
        /// What to create when the target is missing.
        create: Create,
        /// Remount read-only afterwards.
        readonly: bool,
    },
    /// A symlink inside the sandbox (only on the sandbox's own tmpfs `/dev`).
    Symlink {
        /// What the link points at.
        to: String,
        /// The link, inside the sandbox.
        link: String,
    },
    /// Hide a path (runc's masked paths): `/dev/null` over a file, an empty read-only tmpfs
    /// over a directory; skipped when absent.
    Mask(String),
    /// Bind a path over itself read-only (runc's readonly paths); skipped when absent.
    ReadonlyPath(String),
    /// Bind a host tree with every mount below it, then make all of them read-only,
    /// nosuid, nodev and noexec (the host's `/sys` where a user namespace may not mount
    /// sysfs).
    ReadonlyTree {
        /// Host path.
        source: PathBuf,
        /// Path inside the sandbox.
        target: String,
    },
    /// `pivot_root` into the new root and detach the old one.
    PivotRoot,
}

/// runc's default masked paths.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host device nodes bound into the sandbox's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Files the sandbox writes in its temp dir and binds over `/etc/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    /// Source of `/etc/hosts`.
    pub hosts: PathBuf,
    /// Source of `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// Source of `/etc/hostname`.
    pub hostname: PathBuf,
}

/// What running in a user namespace (rootless mode) changes in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rootless {
    /// gid 5 (`tty`) exists inside, so devpts may give new terminals that group.
    pub tty_gid_mapped: bool,
}

/// Builds the plan for `spec`. `etc` names the files prepared on the host; `secrets`
/// gives, per `ExtraMount::Secret` in order, the prepared copy to bind; `rootless` is
/// set when the sandbox has its own user namespace, where:
///
/// - overlay mounts get `userxattr` (Linux >= 5.11: overlay keeps its whiteouts and
///   opaque marks in `user.overlay.*` xattrs, as `trusted.*` needs host root) and lose
///   `redirect_dir=off`, which the kernel refuses next to `userxattr` (it then creates no
///   redirects anyway, so the upper dir stays a self-contained diff);
/// - devpts gets `gid=5` only when that group is mapped;
/// - with the host's network ([`Network::Host`]), `/sys` is the host's bound read-only:
///   sysfs can only be mounted by the user namespace that owns the network namespace.
///   Every other network is an own namespace, whose sysfs shows its own devices.
pub fn plan(
    spec: &Spec,
    etc: &EtcFiles,
    secrets: &[PathBuf],
    rootless: Option<Rootless>,
) -> Vec<Step> {
    let mut steps = vec![Step::MakePrivate];
    steps.extend(spec.rootfs.iter().map(|m| {
        Step::Rootfs(match rootless {
            Some(_) => with_userxattr(m),
            None => m.clone(),
        })
    }));
    steps.push(Step::Fs {
        fstype: "proc",
        target: "/proc".into(),
        flags: SECURE,
        data: String::new(),
    });
    steps.push(Step::Fs {
        fstype: "tmpfs",
        target: "/dev".into(),
        flags: Flags {
            nosuid: true,
            ..Flags::default()
        },
        data: "mode=755,size=65536k".into(),
    });
    for dev in DEVICES {
        steps.push(Step::Bind {
            source: PathBuf::from("/dev").join(dev),
            target: format!("/dev/{dev}"),
            create: Create::File,
            readonly: false,
        });
    }
    steps.push(Step::Fs {
        fstype: "devpts",
        target: "/dev/pts".into(),
        flags: Flags {
            nosuid: true,
            noexec: true,
            ..Flags::default()
        },
        data: match rootless {
            Some(Rootless {
                tty_gid_mapped: false,
            }) => "newinstance,ptmxmode=0666,mode=0620".into(),
            _ => "newinstance,ptmxmode=0666,mode=0620,gid=5".into(),
        },
    });
    steps.push(Step::Symlink {
        to: "pts/ptmx".into(),
        link: "/dev/ptmx".into(),
    });
    steps.push(Step::Fs {
        fstype: "tmpfs",
        target: "/dev/shm".into(),
        flags: SECURE,
        data: "mode=1777,size=65536k".into(),
    });
    steps.push(Step::Fs {
        fstype: "mqueue",
        target: "/dev/mqueue".into(),
        flags: SECURE,
        data: String::new(),
    });
    for (to, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        steps.push(Step::Symlink {
            to: to.into(),
            link: link.into(),
        });
    }
    // sysfs shows the network devices of the namespace that mounts it; with the host's
    // network the host's devices are what the command sees anyway.
    if rootless.is_some() && spec.network == Network::Host {
        steps.push(Step::ReadonlyTree {
            source: "/sys".into(),
            target: "/sys".into(),
        });
    } else {
        steps.push(Step::Fs {
            fstype: "sysfs",
            target: "/sys".into(),
            flags: Flags {
                readonly: true,
                ..SECURE
            },
            data: String::new(),
        });
    }
    for (source, target) in [
        (&etc.hosts, "/etc/hosts"),
        (&etc.resolv_conf, "/etc/resolv.conf"),
        (&etc.hostname, "/etc/hostname"),
    ] {
        steps.push(Step::Bind {
            source: source.clone(),
            target: target.into(),
            create: Create::File,
            readonly: true,
        });
    }
    let mut secrets = secrets.iter();
    for mount in &spec.mounts {
        match mount {
            ExtraMount::Bind {
                source,
                target,
                readonly,
            } => steps.push(Step::Bind {
                source: source.clone(),
                target: target.clone(),
                create: if source.is_dir() {
                    Create::Dir
                } else {
                    Create::File
                },
                readonly: *readonly,
            }),
            ExtraMount::Tmpfs { target, size, mode } => {
                let mut data = format!("mode={:o}", mode.unwrap_or(0o1777));
                if let Some(size) = size {
                    data.push_str(&format!(",size={size}"));
                }
                steps.push(Step::Fs {
                    fstype: "tmpfs",
                    target: target.clone(),
                    flags: Flags {
                        nosuid: true,
                        nodev: true,
                        ..Flags::default()
                    },
                    data,
                });
            }
            ExtraMount::Secret { target, .. } => {
                if let Some(copy) = secrets.next() {
                    steps.push(Step::Bind {
                        source: copy.clone(),
                        target: target.clone(),
                        create: Create::File,
                        readonly: true,
                    });
                }
            }
        }
    }
    steps.extend(MASKED_PATHS.iter().map(|p| Step::Mask((*p).into())));
    steps.extend(
        READONLY_PATHS
            .iter()
            .map(|p| Step::ReadonlyPath((*p).into())),
    );
    steps.push(Step::PivotRoot);
    steps
}

/// An overlay mount as a user namespace can make it (see [`plan`]); other mounts as given.
fn with_userxattr(mount: &Mount) -> Mount {
    let mut mount = mount.clone();
    if mount.kind == "overlay" {
        mount.options.retain(|o| o != "redirect_dir=off");
        if !mount.options.iter().any(|o| o == "userxattr") {
            mount.options.push("userxattr".to_owned());
        }
    }
    mount
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::bind_rootfs;

    fn etc() -> EtcFiles {
        EtcFiles {
            hosts: "/t/hosts".into(),
            resolv_conf: "/t/resolv.conf".into(),
            hostname: "/t/hostname".into(),
        }
    }

    /// Checks the plan's steps, printed one a line in a short form, against `expected`.
    fn check(spec: &Spec, secrets: &[PathBuf], rootless: Option<Rootless>, expected: &[&str]) {
        let got: Vec<String> = plan(spec, &etc(), secrets, rootless)
            .iter()
            .map(short)
            .collect();
        assert_eq!(got, expected, "{got:#?}");
    }

    fn short(step: &Step) -> String {
        match step {
            Step::MakePrivate => "private".into(),
            Step::Rootfs(m) => format!(
                "rootfs {} {} -> {} {}",
                m.kind,
                m.source,
                m.target,
                m.options.join(",")
            ),
            Step::Fs {
                fstype,
                target,
                flags,
                data,
            } => format!(
                "fs {fstype} {target}{} {data}",
                if flags.readonly { " ro" } else { "" }
            ),
            Step::Bind {
                source,
                target,
                readonly,
                ..
            } => format!(
                "bind {} {target}{}",
                source.display(),
                if *readonly { " ro" } else { "" }
            ),
            Step::Symlink { to, link } => format!("ln {to} {link}"),
            Step::Mask(p) => format!("mask {p}"),
            Step::ReadonlyPath(p) => format!("ro {p}"),
            Step::ReadonlyTree { source, target } => {
                format!("bind-tree {} {target} ro", source.display())
            }
            Step::PivotRoot => "pivot".into(),
        }
    }

    #[test]
    fn orders_rootfs_then_kernel_fs_then_etc_then_extra_then_masks() {
        let mut spec = Spec::new(bind_rootfs("/r"), vec!["true".into()]);
        spec.mounts = vec![
            ExtraMount::Tmpfs {
                target: "/tmp".into(),
                size: Some(1 << 20),
                mode: None,
            },
            ExtraMount::Secret {
                source: "/s/token".into(),
                target: "/run/secrets/token".into(),
                mode: None,
                uid: None,
                gid: None,
            },
            ExtraMount::Bind {
                source: "/nonexistent/cache".into(),
                target: "/root/.cache".into(),
                readonly: false,
            },
        ];
        let mut expected = vec![
            "private",
            "rootfs bind /r -> / rbind,rw",
            "fs proc /proc ",
            "fs tmpfs /dev mode=755,size=65536k",
            "bind /dev/null /dev/null",
            "bind /dev/zero /dev/zero",
            "bind /dev/full /dev/full",
            "bind /dev/random /dev/random",
            "bind /dev/urandom /dev/urandom",
            "bind /dev/tty /dev/tty",
            "fs devpts /dev/pts newinstance,ptmxmode=0666,mode=0620,gid=5",
            "ln pts/ptmx /dev/ptmx",
            "fs tmpfs /dev/shm mode=1777,size=65536k",
            "fs mqueue /dev/mqueue ",
            "ln /proc/self/fd /dev/fd",
            "ln /proc/self/fd/0 /dev/stdin",
            "ln /proc/self/fd/1 /dev/stdout",
            "ln /proc/self/fd/2 /dev/stderr",
            "fs sysfs /sys ro ",
            "bind /t/hosts /etc/hosts ro",
            "bind /t/resolv.conf /etc/resolv.conf ro",
            "bind /t/hostname /etc/hostname ro",
            "fs tmpfs /tmp mode=1777,size=1048576",
            "bind /t/secret-0 /run/secrets/token ro",
            "bind /nonexistent/cache /root/.cache",
        ];
        let masks: Vec<String> = MASKED_PATHS.iter().map(|p| format!("mask {p}")).collect();
        let ros: Vec<String> = READONLY_PATHS.iter().map(|p| format!("ro {p}")).collect();
        expected.extend(masks.iter().map(String::as_str));
        expected.extend(ros.iter().map(String::as_str));
        expected.push("pivot");
        check(&spec, &["/t/secret-0".into()], None, &expected);
    }

    #[test]
    fn rootless_overlay_devpts_and_sys() {
        let overlay = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: "/".into(),
            options: vec![
                "lowerdir=/l".into(),
                "upperdir=/u".into(),
                "workdir=/w".into(),
                "redirect_dir=off".into(),
                "metacopy=off".into(),
            ],
        };
        let mut spec = Spec::new(vec![overlay], vec!["true".into()]);
        let pick = |steps: Vec<String>| -> Vec<String> {
            steps
                .into_iter()
                .filter(|s| s.starts_with("rootfs") || s.contains("devpts") || s.contains("/sys "))
                .collect()
        };
        let run = |spec: &Spec, rootless| {
            pick(
                plan(spec, &etc(), &[], rootless)
                    .iter()
                    .map(short)
                    .collect(),
            )
        };
        let no_tty = Some(Rootless {
            tty_gid_mapped: false,
        });
        // The default network is an own namespace: its own sysfs, rootless too.
        assert_eq!(run(&spec, no_tty)[2], "fs sysfs /sys ro ");
        spec.network = Network::Host;
        assert_eq!(
            run(&spec, no_tty),
            [
                "rootfs overlay overlay -> / lowerdir=/l,upperdir=/u,workdir=/w,metacopy=off,userxattr",
                "fs devpts /dev/pts newinstance,ptmxmode=0666,mode=0620",
                "bind-tree /sys /sys ro",
            ]
        );
        spec.network = Network::None;
        let tty = Some(Rootless {
            tty_gid_mapped: true,
        });
        assert_eq!(
            run(&spec, tty)[1..],
            [
                "fs devpts /dev/pts newinstance,ptmxmode=0666,mode=0620,gid=5",
                "fs sysfs /sys ro ",
            ]
        );
        assert_eq!(
            run(&spec, None)[0],
            "rootfs overlay overlay -> / lowerdir=/l,upperdir=/u,workdir=/w,redirect_dir=off,metacopy=off"
        );
    }
}
