//! A recording [`Sys`]: keeps every call as data so tests can assert what would be mounted,
//! in which order, without root.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::Sys;

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `mount(2)`.
    Mount {
        /// Source.
        source: Option<PathBuf>,
        /// Target.
        target: PathBuf,
        /// Filesystem type.
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// Data.
        data: Option<String>,
    },
    /// The new mount API.
    Fsconfig {
        /// Filesystem type.
        fstype: String,
        /// Target.
        target: PathBuf,
        /// Options.
        options: Vec<String>,
    },
    /// `mount_setattr` making a tree read-only.
    ReadonlyRecursive(PathBuf),
    /// `pivot_root`.
    PivotRoot(PathBuf),
}

/// Records calls; every call succeeds.
#[derive(Debug, Default)]
pub struct Fake {
    /// The calls so far.
    pub calls: RefCell<Vec<Call>>,
}

impl Sys for Fake {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.calls.borrow_mut().push(Call::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_owned),
            flags,
            data: data.map(str::to_owned),
        });
        Ok(())
    }

    fn mount_fsconfig(
        &self,
        fstype: &str,
        _source: &str,
        target: &Path,
        options: &[String],
    ) -> io::Result<()> {
        self.calls.borrow_mut().push(Call::Fsconfig {
            fstype: fstype.to_owned(),
            target: target.to_path_buf(),
            options: options.to_vec(),
        });
        Ok(())
    }

    fn set_readonly_recursive(&self, target: &Path) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::ReadonlyRecursive(target.to_path_buf()));
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(Call::PivotRoot(new_root.to_path_buf()));
        Ok(())
    }
}
