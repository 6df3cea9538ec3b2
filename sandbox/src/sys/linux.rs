//! The real kernel calls. All of kiln's `unsafe` code is in this file; each block says why
//! it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::unistd::ForkResult;

use super::Sys;

/// The running kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Linux;

impl Sys for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(io::Error::from)
    }

    fn mount_fsconfig(
        &self,
        fstype: &str,
        source: &str,
        target: &Path,
        options: &[String],
    ) -> io::Result<()> {
        let fs = fsopen(fstype)?;
        fsconfig_string(&fs, "source", source)?;
        for option in options {
            match option.split_once('=') {
                Some((key, value)) => fsconfig_string(&fs, key, value)?,
                None => fsconfig_flag(&fs, option)?,
            }
        }
        fsconfig_create(&fs)?;
        let mnt = fsmount(&fs)?;
        move_mount(&mnt, target)
    }

    fn set_readonly_recursive(&self, target: &Path) -> io::Result<()> {
        mount_setattr_readonly(target)
    }

    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        nix::unistd::chdir(new_root)?;
        nix::unistd::pivot_root(".", ".")?;
        // The old root is now stacked under "."; detaching it cuts the sandbox off from
        // every host mount.
        nix::mount::umount2(".", MntFlags::MNT_DETACH)?;
        nix::unistd::chdir("/")?;
        Ok(())
    }
}

fn cstring(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn fsopen(fstype: &str) -> io::Result<OwnedFd> {
    let name = cstring(fstype.as_bytes())?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; fsopen takes
    // no other pointers.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn fsconfig_string(fs: &OwnedFd, key: &str, value: &str) -> io::Result<()> {
    let key = cstring(key.as_bytes())?;
    let value = cstring(value.as_bytes())?;
    // SAFETY: both strings are NUL-terminated and live until the call returns; `fs` is an
    // open fs context fd.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    })?;
    Ok(())
}

fn fsconfig_flag(fs: &OwnedFd, key: &str) -> io::Result<()> {
    let key = cstring(key.as_bytes())?;
    // SAFETY: `key` is NUL-terminated and outlives the call; a flag takes a NULL value.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_SET_FLAG,
            key.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    Ok(())
}

fn fsconfig_create(fs: &OwnedFd) -> io::Result<()> {
    // SAFETY: FSCONFIG_CMD_CREATE takes no pointers; `fs` is an open fs context fd.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    Ok(())
}

fn fsmount(fs: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; `fs` is a created fs context fd.
    let fd = check(unsafe {
        libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), libc::FSMOUNT_CLOEXEC, 0)
    })?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn move_mount(mnt: &OwnedFd, target: &Path) -> io::Result<()> {
    let empty = cstring(b"")?;
    let target = cstring(target.as_os_str().as_bytes())?;
    // SAFETY: both paths are NUL-terminated and outlive the call; `mnt` is a detached
    // mount fd, moved with MOVE_MOUNT_F_EMPTY_PATH (the empty path names the fd itself).
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// `struct mount_attr` of `<linux/mount.h>` (libc has the constants, not the struct).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn mount_setattr_readonly(target: &Path) -> io::Result<()> {
    let path = cstring(target.as_os_str().as_bytes())?;
    let attr = MountAttr {
        attr_set: libc::MOUNT_ATTR_RDONLY
            | libc::MOUNT_ATTR_NOSUID
            | libc::MOUNT_ATTR_NODEV
            | libc::MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` is a properly laid out `mount_attr`
    // whose size is passed along; both outlive the call, and the kernel only reads them.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// `fork(2)`. Only called by the helper, which is single-threaded, so the child may do
/// anything (allocate, take locks) before it execs.
pub fn fork() -> io::Result<ForkResult> {
    // SAFETY: the helper process has exactly one thread (it is started by
    // `helper::run_if_requested` before any thread exists), so no lock can be held by a
    // thread that does not exist in the child.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// Brings the loopback interface of the current network namespace up (a new namespace
/// starts with `lo` down), with `SIOCSIFFLAGS` on a datagram socket: no `ip` binary.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2) call, no pointers.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd was just created and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name, alive for the call; the
    // kernel writes the flags into the union.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS reads the name and flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resets every catchable signal to its default action and unblocks all signals, so the
/// command does not inherit kiln's dispositions (Rust ignores SIGPIPE: a `yes | head`
/// would spin forever) — as runc does before exec.
pub fn reset_signals() -> io::Result<()> {
    use nix::sys::signal::{
        SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, sigaction, sigprocmask,
    };
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in nix::sys::signal::Signal::iterator() {
        if matches!(
            signal,
            nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGSTOP
        ) {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no handler code, so no async-signal-safety
        // question arises; the process is single-threaded.
        unsafe { sigaction(signal, &default) }.map_err(io::Error::from)?;
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(io::Error::from)
}

/// Marks every file descriptor from 3 up close-on-exec, so nothing the process that
/// started kiln left open (a directory, a file, a pipe) reaches the sandboxed command.
/// `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)` (Linux >= 5.11); on older kernels each fd
/// listed in `/proc/self/fd` gets `FD_CLOEXEC` instead.
pub fn cloexec_from_3() -> io::Result<()> {
    // SAFETY: close_range takes no pointers; with CLOSE_RANGE_CLOEXEC it only sets a flag
    // on descriptors and closes nothing, so no owner of an fd is invalidated.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= 3)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD with FD_CLOEXEC only sets a flag; an fd that closed meanwhile
        // (the directory's own) gives EBADF, which is ignored.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// The file descriptors open in this process (from `/proc/self/fd`), for checks.
pub fn open_fds() -> io::Result<Vec<i32>> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    Ok(fds)
}

/// Closes every file descriptor of this process except `keep`. Only for a forked child
/// that never returns into the code owning those descriptors (it ends with
/// `std::process::exit`), such as the network janitor: it must not hold the helper's
/// socket or the command's output pipes, or kiln would wait for it.
pub fn close_all_except(keep: &[i32]) -> io::Result<()> {
    for fd in open_fds()? {
        if !keep.contains(&fd) {
            // SAFETY: the caller's process exits without touching the objects owning
            // these fds again, so no owner uses a closed (or reused) descriptor; an fd
            // already gone (the directory fd of the listing) gives EBADF, ignored.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// A terminal's size in character cells (`struct winsize` without the unused pixel
/// fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// The window size of the terminal `fd` refers to (`TIOCGWINSZ`).
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<WindowSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points at
    // a live, properly aligned `libc::winsize`; `fd` is open for the whole call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(WindowSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Sets the window size of the terminal `fd` refers to (`TIOCSWINSZ`; on a pty master
/// the kernel sends SIGWINCH to the slave's foreground process group).
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ only reads one `struct winsize` through the pointer, which points
    // at a live `libc::winsize`; `fd` is open for the whole call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the terminal `fd` the controlling terminal of the calling process, which must be
/// a session leader without one (`TIOCSCTTY`, after `setsid`).
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal a terminal another
    // session owns), no pointer; `fd` is open for the whole call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0 as libc::c_int) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `data` with `fd` attached (`SCM_RIGHTS`) over the UNIX socket `socket`.
pub fn send_with_fd(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [io::IoSlice::new(data)];
    let raw = fd.map(|fd| [fd.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = match &raw {
        Some(raw) => vec![ControlMessage::ScmRights(raw)],
        None => Vec::new(),
    };
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != data.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"));
    }
    Ok(())
}

/// Receives into `buf` from the UNIX socket `socket`, with the file descriptors that came
/// attached (`SCM_RIGHTS`, made close-on-exec). Returns the bytes read (0 at EOF).
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed this descriptor in our table for this
                // message; nothing else knows of it, so this is its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((msg.bytes, fds))
}
