//! `kiln debug run`: one command in a sandbox, for trying the sandbox by hand.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kiln_sandbox::{CancelHandle, ExtraMount, Network, Spec, Stream, bind_rootfs};

use crate::args::GlobalArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The root filesystem directory (bind mounted; writes land in it)
    pub(crate) rootfs: PathBuf,
    /// User as uid[:gid] or name[:group] from the rootfs's /etc/passwd and /etc/group
    #[arg(long, short = 'u')]
    pub(crate) user: Option<String>,
    /// Environment variable KEY=VALUE (repeatable; PATH defaults to Docker's)
    #[arg(long, short = 'e')]
    pub(crate) env: Vec<String>,
    /// Working directory inside the sandbox (created when missing)
    #[arg(long, short = 'w', default_value = "/")]
    pub(crate) cwd: String,
    /// Network: default (own namespace with NAT), none (only lo) or host (the host's)
    #[arg(long, default_value = "default")]
    pub(crate) network: String,
    /// Hostname
    #[arg(long, default_value = "kiln")]
    pub(crate) hostname: String,
    /// Extra mount: type=bind,source=S,target=T[,readonly] | type=tmpfs,target=T[,size=N]
    /// | type=secret,source=S,target=T[,mode=0400]
    #[arg(long)]
    pub(crate) mount: Vec<String>,
    /// Kill the command after this many seconds
    #[arg(long)]
    pub(crate) timeout: Option<u64>,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}

pub(crate) fn run(_global: &GlobalArgs, args: RunArgs) -> anyhow::Result<ExitCode> {
    let rootfs = std::fs::canonicalize(&args.rootfs)
        .with_context(|| format!("rootfs {}", args.rootfs.display()))?;
    let mut spec = Spec::new(bind_rootfs(rootfs), args.command);
    if !args.env.iter().any(|e| e.starts_with("PATH=")) {
        spec.env.extend(args.env);
    } else {
        spec.env = args.env;
    }
    spec.user = args.user.unwrap_or_default();
    spec.cwd = args.cwd;
    spec.hostname = args.hostname;
    spec.network = match args.network.as_str() {
        "default" => Network::Default,
        "none" => Network::None,
        "host" => Network::Host,
        other => anyhow::bail!("unknown --network {other:?}: use default, none or host"),
    };
    spec.timeout = args.timeout.map(Duration::from_secs);
    for mount in &args.mount {
        spec.mounts.push(parse_mount(mount)?);
    }
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut write_err = None;
    let status = kiln_sandbox::run(
        &spec,
        &mut |stream, line| {
            let written = match stream {
                Stream::Stdout => stdout.lock().write_all(line),
                Stream::Stderr => stderr.lock().write_all(line),
            };
            if let Err(err) = written {
                write_err.get_or_insert(err);
            }
        },
        &CancelHandle::new(),
    )?;
    if let Some(err) = write_err {
        return Err(err).context("write the command's output");
    }
    Ok(ExitCode::from(status.code().clamp(0, 255) as u8))
}

fn parse_mount(text: &str) -> anyhow::Result<ExtraMount> {
    let mut kind = "bind";
    let (mut source, mut target, mut readonly, mut size, mut mode) =
        (None, None, false, None, None);
    for field in text.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => kind = v,
            Some(("source" | "src", v)) => source = Some(PathBuf::from(v)),
            Some(("target" | "dst" | "destination", v)) => target = Some(v.to_owned()),
            Some(("size", v)) => {
                size = Some(
                    v.parse::<u64>()
                        .with_context(|| format!("size in --mount {text}"))?,
                )
            }
            Some(("mode", v)) => {
                mode = Some(
                    u32::from_str_radix(v, 8).with_context(|| format!("mode in --mount {text}"))?,
                )
            }
            None if field == "readonly" || field == "ro" => readonly = true,
            _ => anyhow::bail!("unknown field {field:?} in --mount {text}"),
        }
    }
    let target = target.with_context(|| format!("--mount {text} needs target="))?;
    let need_source = || {
        source
            .clone()
            .with_context(|| format!("--mount {text} needs source="))
    };
    Ok(match kind {
        "bind" | "cache" => ExtraMount::Bind {
            source: need_source()?,
            target,
            readonly,
        },
        "tmpfs" => ExtraMount::Tmpfs { target, size, mode },
        "secret" => ExtraMount::Secret {
            source: need_source()?,
            target,
            mode,
            uid: None,
            gid: None,
        },
        other => anyhow::bail!("unknown mount type {other:?} in --mount {text}"),
    })
}
