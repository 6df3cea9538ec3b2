//! `kiln serve`: the engine behind the Docker Engine API on a UNIX socket (see
//! `docs/api.md`). The server lives in `kiln-serve`; this module reads the flags, opens
//! the store, owns the signals and prints what happens.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kiln_serve::{Backend, Host, ServeConfig, Server, SocketOptions, TlsFiles};

use crate::args::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Where to listen: unix:///PATH or tcp://IP:PORT (repeatable) [default:
    /// unix:///run/kiln/kiln.sock for root, unix://$XDG_RUNTIME_DIR/kiln/kiln.sock
    /// otherwise]. TCP is refused off loopback unless --tlscert/--tlskey/--tlscacert
    /// are given
    #[arg(short = 'H', long = "host", value_name = "URL")]
    pub(crate) hosts: Vec<String>,
    /// The group that may use the UNIX socket (mode 0660), like dockerd's docker group
    /// [default: the server's own group]
    #[arg(long, value_name = "GROUP")]
    pub(crate) group: Option<String>,
    /// The server's TLS certificate (PEM), for tcp:// hosts
    #[arg(long, value_name = "FILE")]
    pub(crate) tlscert: Option<PathBuf>,
    /// The server's TLS private key (PEM)
    #[arg(long, value_name = "FILE")]
    pub(crate) tlskey: Option<PathBuf>,
    /// The CA whose client certificates are accepted (PEM); clients without one are
    /// refused
    #[arg(long, value_name = "FILE")]
    pub(crate) tlscacert: Option<PathBuf>,
    /// Seconds running builds may go on after SIGTERM before they are cancelled
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub(crate) shutdown_timeout: u64,
    /// The largest build context (or image archive) a client may send, in bytes; a
    /// k, m or g suffix multiplies by 1024s
    #[arg(long, value_name = "SIZE", default_value = "2g")]
    pub(crate) max_context_size: String,
    /// Let clients ask for this entitlement (network.host: RUN steps in the server's
    /// network namespace, its loopback included); refused otherwise
    #[arg(long = "allow-insecure-entitlement", value_name = "NAME")]
    pub(crate) insecure_entitlements: Vec<String>,
}

fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text.as_str(), ""),
    };
    let multiplier: u64 = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => anyhow::bail!("--max-context-size {text}: write a number of bytes, e.g. 500m or 2g"),
    };
    let n: u64 = number.parse().with_context(|| {
        format!("--max-context-size {text}: write a number of bytes, e.g. 500m")
    })?;
    n.checked_mul(multiplier)
        .filter(|n| *n > 0)
        .with_context(|| format!("--max-context-size {text}: out of range"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the server could never stop cleanly; ctrl_c at least.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

pub(crate) fn serve(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let hosts = if args.hosts.is_empty() {
        let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        vec![Host::default_for(is_root(), runtime_dir.as_deref())?]
    } else {
        args.hosts
            .iter()
            .map(|h| Host::parse(h))
            .collect::<Result<Vec<_>, _>>()?
    };
    let config = ServeConfig {
        hosts,
        tls: TlsFiles {
            cert: args.tlscert,
            key: args.tlskey,
            ca: args.tlscacert,
        },
        socket: SocketOptions { group: args.group },
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        max_context_size: parse_size(&args.max_context_size)?,
        insecure_entitlements: args.insecure_entitlements.clone(),
    };
    for name in &args.insecure_entitlements {
        if name != "network.host" {
            anyhow::bail!(
                "--allow-insecure-entitlement {name}: kiln serve grants only network.host (export.devices and export.setuid are the client's, security.insecure is not supported)"
            );
        }
    }
    // Refuse an exposed port before the store is even opened.
    for host in &config.hosts {
        kiln_serve::check_exposure(host, &config.tls)?;
    }
    let backend = Backend::new(crate::cmd::store::open_engine(global)?);
    let runtime = crate::cmd::registry::runtime()?;
    let stopped = runtime.block_on(async {
        let server = Server::bind(backend, config.clone()).await?;
        for host in &config.hosts {
            eprintln!("kiln serve: listening on {host}");
        }
        let stopped = server
            .run(async {
                stop_signal().await;
                eprintln!(
                    "kiln serve: stopping; running builds have {}s to finish",
                    config.shutdown_timeout.as_secs()
                );
            })
            .await;
        anyhow::Ok(stopped)
    })?;
    if stopped.cancelled > 0 {
        eprintln!(
            "kiln serve: cancelled {} build(s) at the shutdown timeout",
            stopped.cancelled
        );
    }
    if stopped.stuck > 0 {
        anyhow::bail!(
            "{} build(s) did not stop after being cancelled; check for leftover sandboxes",
            stopped.stuck
        );
    }
    eprintln!("kiln serve: stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        assert_eq!(parse_size("500m").unwrap(), 500 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1gb").unwrap(), 1 << 30);
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2t").is_err());
    }
}
