//! Where the server listens: `--host unix:///PATH` or `--host tcp://ADDR:PORT`, the
//! default socket path, and the rule that an open TCP port needs mutual TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::ServeError;

/// One address to listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A UNIX socket at this path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl Host {
    /// Parses `unix:///run/kiln/kiln.sock`, `/run/kiln/kiln.sock`, `tcp://127.0.0.1:2375`
    /// or `tcp://[::1]:2376`. TCP needs an IP address (no name lookups) and a port.
    pub fn parse(text: &str) -> Result<Host, ServeError> {
        let bad = |why: &str| ServeError::Host {
            host: text.to_owned(),
            reason: why.to_owned(),
        };
        if let Some(path) = text.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a UNIX socket path must be absolute: unix:///run/kiln/kiln.sock",
                ));
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(Host::Unix(PathBuf::from(text)));
        }
        if let Some(addr) = text.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            return addr.parse::<SocketAddr>().map(Host::Tcp).map_err(|_| {
                bad("write tcp://IP:PORT with an IP address, e.g. tcp://127.0.0.1:2375")
            });
        }
        Err(bad(
            "use unix:///PATH or tcp://IP:PORT (fd:// and ssh:// are not supported)",
        ))
    }

    /// The default: `unix:///run/kiln/kiln.sock` for root, else
    /// `unix://$XDG_RUNTIME_DIR/kiln/kiln.sock`.
    pub fn default_for(is_root: bool, runtime_dir: Option<&Path>) -> Result<Host, ServeError> {
        if is_root {
            return Ok(Host::Unix(PathBuf::from("/run/kiln/kiln.sock")));
        }
        match runtime_dir {
            Some(dir) => Ok(Host::Unix(dir.join("kiln/kiln.sock"))),
            None => Err(ServeError::Host {
                host: String::new(),
                reason: "XDG_RUNTIME_DIR is not set: give the socket with --host unix:///PATH"
                    .to_owned(),
            }),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Unix(path) => write!(f, "unix://{}", path.display()),
            Host::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// The three PEM files of `--tlscert/--tlskey/--tlscacert`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: Option<PathBuf>,
    /// The server's private key.
    pub key: Option<PathBuf>,
    /// The CA that signs the client certificates the server accepts.
    pub ca: Option<PathBuf>,
}

/// Refuses what would expose the engine (root on the host) to the network: a TCP address
/// off loopback without mutual TLS, and half a TLS setup.
pub fn check_exposure(host: &Host, tls: &TlsFiles) -> Result<(), ServeError> {
    let given = [&tls.cert, &tls.key, &tls.ca]
        .iter()
        .filter(|f| f.is_some())
        .count();
    if given != 0 && given != 3 {
        return Err(ServeError::Tls(
            "give all three of --tlscert, --tlskey and --tlscacert: kiln serves TLS only with client certificates verified against --tlscacert".to_owned(),
        ));
    }
    match host {
        Host::Unix(_) if given == 3 => Err(ServeError::Tls(
            "--tlscert/--tlskey/--tlscacert apply to tcp:// hosts; a UNIX socket is guarded by its mode and --group".to_owned(),
        )),
        Host::Tcp(addr) if given == 0 && !addr.ip().is_loopback() => Err(ServeError::Host {
            host: host.to_string(),
            reason: "an open TCP port gives root on this machine to anyone who reaches it: listen on loopback (tcp://127.0.0.1:PORT) or give --tlscert, --tlskey and --tlscacert so that only clients with a certificate from that CA get in".to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<Host>) {
        assert_eq!(Host::parse(text).ok(), expected, "{text}");
    }

    #[test]
    fn hosts_parse() {
        check(
            "unix:///run/kiln/kiln.sock",
            Some(Host::Unix("/run/kiln/kiln.sock".into())),
        );
        check("/tmp/k.sock", Some(Host::Unix("/tmp/k.sock".into())));
        check(
            "tcp://127.0.0.1:2375",
            Some(Host::Tcp("127.0.0.1:2375".parse().unwrap())),
        );
        check(
            "tcp://[::1]:2376",
            Some(Host::Tcp("[::1]:2376".parse().unwrap())),
        );
        check("unix://relative.sock", None);
        check("tcp://localhost:2375", None);
        check("tcp://127.0.0.1", None);
        check("ssh://me@host", None);
    }

    #[test]
    fn open_tcp_needs_mutual_tls() {
        let open = Host::parse("tcp://0.0.0.0:2376").unwrap();
        let lo = Host::parse("tcp://127.0.0.1:2376").unwrap();
        let all = TlsFiles {
            cert: Some("c".into()),
            key: Some("k".into()),
            ca: Some("ca".into()),
        };
        let no_ca = TlsFiles {
            ca: None,
            ..all.clone()
        };
        assert!(check_exposure(&open, &TlsFiles::default()).is_err());
        assert!(check_exposure(&open, &no_ca).is_err());
        assert!(check_exposure(&open, &all).is_ok());
        assert!(check_exposure(&lo, &TlsFiles::default()).is_ok());
        assert!(check_exposure(&Host::Unix("/s".into()), &all).is_err());
    }

    #[test]
    fn default_socket() {
        assert_eq!(
            Host::default_for(true, None).unwrap(),
            Host::Unix("/run/kiln/kiln.sock".into())
        );
        assert_eq!(
            Host::default_for(false, Some(Path::new("/run/user/1000"))).unwrap(),
            Host::Unix("/run/user/1000/kiln/kiln.sock".into())
        );
        assert!(Host::default_for(false, None).is_err());
    }
}
