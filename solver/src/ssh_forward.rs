//! The socket a `RUN --mount=type=ssh` sees: one of kiln's own, made for the step with
//! the mount's owner and mode, whose connections are forwarded to the `--ssh` agent (the
//! user's, or the one `ssh_agent` serves from key files). As BuildKit's sshforward: the
//! agent's own socket is never shown to the step, nor changed for it.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A forwarding socket; dropping it stops accepting and removes the socket.
pub struct SshForward {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl SshForward {
    /// Listens on `socket` (a new path in a directory only root can enter), owned by
    /// `uid:gid` with permission bits `mode`, forwarding each connection to `upstream`.
    pub fn start(
        upstream: &Path,
        socket: &Path,
        mode: u32,
        owner: (u32, u32),
    ) -> io::Result<SshForward> {
        let listener = UnixListener::bind(socket)?;
        std::os::unix::fs::chown(socket, Some(owner.0), Some(owner.1))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode & 0o777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        let acceptor = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kiln-ssh-forward".to_owned())
                .spawn(move || accept_loop(&listener, &upstream, &stop))?
        };
        Ok(SshForward {
            socket: socket.to_owned(),
            stop,
            acceptor: Some(acceptor),
        })
    }
}

impl Drop for SshForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocked accept; it sees `stop` and returns.
        let _ = UnixStream::connect(&self.socket);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn accept_loop(listener: &UnixListener, upstream: &Path, stop: &AtomicBool) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            // Out of descriptors, say: wait a little rather than spin.
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        };
        // A step that cannot reach the agent sees its connection closed, as with an
        // agent that went away; ssh reports that itself.
        let Ok(agent) = UnixStream::connect(upstream) else {
            continue;
        };
        let _ = splice_both_ways(client, agent);
    }
}

/// Copies bytes both ways until each side has closed its writing half; the threads end
/// with the connection (the step's processes die with its sandbox).
fn splice_both_ways(a: UnixStream, b: UnixStream) -> io::Result<()> {
    let (a2, b2) = (a.try_clone()?, b.try_clone()?);
    let one_way = |mut from: UnixStream, mut to: UnixStream| {
        move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        }
    };
    std::thread::Builder::new()
        .name("kiln-ssh-forward".to_owned())
        .spawn(one_way(a, b2))?;
    std::thread::Builder::new()
        .name("kiln-ssh-forward".to_owned())
        .spawn(one_way(b, a2))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::MetadataExt as _;

    /// An upstream that answers each connection with what it read, upper-cased.
    fn shouting_upstream(path: &Path) {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut buf = [0u8; 5];
                conn.read_exact(&mut buf).unwrap();
                conn.write_all(&buf.to_ascii_uppercase()).unwrap();
            }
        });
    }

    #[test]
    fn forwards_connections_with_the_asked_owner_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = dir.path().join("agent");
        shouting_upstream(&upstream);
        let socket = dir.path().join("step.sock");
        let own = (own_uid(), own_gid());
        let forward = SshForward::start(&upstream, &socket, 0o660, own).unwrap();
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660);
        assert_eq!((meta.uid(), meta.gid()), own);
        for _ in 0..2 {
            let mut conn = UnixStream::connect(&socket).unwrap();
            conn.write_all(b"hello").unwrap();
            let mut answer = [0u8; 5];
            conn.read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"HELLO");
        }
        drop(forward);
        assert!(!socket.exists(), "the socket goes with the forward");
        // The upstream is left as it was.
        assert!(upstream.exists());
    }

    fn own_uid() -> u32 {
        std::fs::metadata("/proc/self").unwrap().uid()
    }

    fn own_gid() -> u32 {
        std::fs::metadata("/proc/self").unwrap().gid()
    }
}
