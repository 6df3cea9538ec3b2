//! Binding the listener: a UNIX socket (mode 0660, group of `--group`, a stale socket
//! replaced, a live one left alone) or a TCP port (loopback, or mutual TLS).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use crate::ServeError;
use crate::host::{Host, TlsFiles};

/// A connection, whatever it arrived on.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// How the socket file is made.
#[derive(Clone, Debug)]
pub struct SocketOptions {
    /// The group that may use the socket (name or number); `None` = the server's own.
    pub group: Option<String>,
}

/// A bound listener; a UNIX socket file is removed when this is dropped (if it is still
/// the one this server made).
pub(crate) enum Listener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
        inode: u64,
    },
    Tcp {
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    },
}

/// What `accept` gives: the stream and, for TLS, the acceptor that must still run its
/// handshake (in the connection's own task, so a slow client holds up no one).
pub(crate) enum Accepted {
    Plain(Box<dyn Conn>),
    Tls(tokio::net::TcpStream, tokio_rustls::TlsAcceptor),
}

impl Listener {
    pub(crate) async fn bind(
        host: &Host,
        tls: &TlsFiles,
        socket: &SocketOptions,
    ) -> Result<Listener, ServeError> {
        crate::host::check_exposure(host, tls)?;
        match host {
            Host::Unix(path) => bind_unix(path, socket),
            Host::Tcp(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|e| ServeError::Io {
                    what: format!("listen on tcp://{addr}"),
                    source: e,
                })?;
                let tls = match (&tls.cert, &tls.key, &tls.ca) {
                    (Some(cert), Some(key), Some(ca)) => Some(crate::tls::acceptor(cert, key, ca)?),
                    _ => None,
                };
                Ok(Listener::Tcp { listener, tls })
            }
        }
    }

    pub(crate) async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                Ok(Accepted::Plain(Box::new(stream)))
            }
            Listener::Tcp { listener, tls } => {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(match tls {
                    Some(acceptor) => Accepted::Tls(stream, acceptor.clone()),
                    None => Accepted::Plain(Box::new(stream)),
                })
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, inode, .. } = self
            && std::fs::symlink_metadata(&*path).is_ok_and(|m| m.ino() == *inode)
        {
            let _ = std::fs::remove_file(&*path);
        }
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> ServeError {
    move |source| ServeError::Io { what, source }
}

fn bind_unix(path: &Path, options: &SocketOptions) -> Result<Listener, ServeError> {
    let gid = options.group.as_deref().map(group_id).transpose()?;
    if let Some(parent) = path.parent()
        && !parent.exists()
    {
        // Root's /run/kiln is world-traversable (the socket's mode guards it); a user's
        // directory under XDG_RUNTIME_DIR is private.
        let mode = if is_root() { 0o755 } else { 0o700 };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(parent)
            .map_err(io_err(format!("create {}", parent.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // Nobody answering means a socket left by a server that was killed: it is
            // replaced by the rename below.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::InUse {
                    path: path.to_owned(),
                });
            }
        }
        Ok(_) => {
            return Err(ServeError::Host {
                host: format!("unix://{}", path.display()),
                reason: "the path exists and is not a socket; remove it or choose another --host"
                    .to_owned(),
            });
        }
        Err(_) => {}
    }
    // Bound under a temporary name, given its mode and group, then renamed into place:
    // no client ever sees the socket with the umask's permissions.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let temp = path.with_file_name(format!(
        ".{}.{nanos:08x}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let listener = UnixListener::bind(&temp)
        .map_err(io_err(format!("listen on unix://{}", temp.display())))?;
    let finish = || -> Result<u64, ServeError> {
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o660))
            .map_err(io_err(format!("chmod 0660 {}", temp.display())))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&temp, None, Some(gid))
                .map_err(io_err(format!("chgrp {gid} {}", temp.display())))?;
        }
        std::fs::rename(&temp, path).map_err(io_err(format!(
            "move the socket into place at {}",
            path.display()
        )))?;
        let meta =
            std::fs::symlink_metadata(path).map_err(io_err(format!("stat {}", path.display())))?;
        Ok(meta.ino())
    };
    match finish() {
        Ok(inode) => Ok(Listener::Unix {
            listener,
            path: path.to_owned(),
            inode,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

fn group_id(name: &str) -> Result<u32, ServeError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => Err(ServeError::Host {
            host: String::new(),
            reason: format!(
                "--group {name}: no such group; create it (groupadd {name}) or give a group id"
            ),
        }),
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
