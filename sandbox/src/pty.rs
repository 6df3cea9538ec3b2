//! The caller's side of a terminal: what a front end needs to relay its own terminal to
//! the pty [`crate::run_attached`] makes in the sandbox (the window size, raw mode). The
//! pty itself is made by the sandbox's PID 1, in the sandbox's devpts.

use std::io;
use std::os::fd::BorrowedFd;

use nix::sys::termios::{self, SetArg, Termios};

pub use crate::sys::linux::WindowSize;

/// The window size of the terminal `fd` is (`None`: not a terminal, or a size of 0x0,
/// for which 24x80 is the usual stand-in).
pub fn window_size(fd: BorrowedFd<'_>) -> Option<WindowSize> {
    crate::sys::linux::window_size(fd)
        .ok()
        .filter(|s| s.rows > 0 && s.cols > 0)
}

/// Sets the window size of a pty (its master): the command sees SIGWINCH.
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> io::Result<()> {
    crate::sys::linux::set_window_size(fd, size)
}

/// The caller's terminal in raw mode (no echo, no line editing, no signals from keys: the
/// bytes go to the sandbox's pty, whose own line discipline does all that) until dropped.
#[derive(Debug)]
pub struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl<'fd> RawMode<'fd> {
    /// Puts the terminal `fd` in raw mode.
    pub fn enable(fd: BorrowedFd<'fd>) -> io::Result<RawMode<'fd>> {
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSADRAIN, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}
