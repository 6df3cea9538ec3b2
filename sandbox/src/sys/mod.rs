//! The kernel calls the sandbox makes, fenced in one place (youki's `Syscall` idea).
//!
//! [`Sys`] lists the mount-namespace calls the mount plan performs; [`linux::Linux`] makes
//! them for real and [`fake::Fake`] records them so tests check the order without root.
//! The few other calls that need `unsafe` (fork, the new mount API, the loopback ioctl)
//! are plain functions in [`linux`]; everything else goes through `nix`'s safe wrappers.

use std::io;
use std::path::Path;

use nix::mount::MsFlags;

pub mod fake;
pub mod linux;

/// The mount-namespace calls of the mount plan.
pub trait Sys {
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// The new mount API (`fsopen`, one `fsconfig` per option, `fsmount`, `move_mount`):
    /// no one-page limit on the options, and `lowerdir+` adds overlay layers one by one.
    fn mount_fsconfig(
        &self,
        fstype: &str,
        source: &str,
        target: &Path,
        options: &[String],
    ) -> io::Result<()>;
    /// Makes the mount at `target` and every mount below it read-only, nosuid, nodev and
    /// noexec (`mount_setattr` with `AT_RECURSIVE`, Linux >= 5.12); a remount would reach
    /// only the top one.
    fn set_readonly_recursive(&self, target: &Path) -> io::Result<()>;
    /// `chdir(new_root)`, `pivot_root(".", ".")`, detach the old root, `chdir("/")`.
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
}
