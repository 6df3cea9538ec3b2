//! `kiln run`: an image of the store in kiln's sandbox, its Entrypoint, Cmd, Env,
//! WorkingDir and User resolved as `docker run` resolves them; and [`attached`], the
//! terminal side every interactive sandbox of the cli shares (`kiln run -it`, the shell
//! of `kiln build --on-error=shell`, `kiln debug shell`).

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use kiln_image::config::ContainerConfig;
use kiln_sandbox::pty::{RawMode, WindowSize};
use kiln_sandbox::{Attach, CancelHandle, ExitStatus, ExtraMount, Network, Signal, Spec};

use crate::args::GlobalArgs;

/// kiln runs the command in the same sandbox as a RUN step, on the image's filesystem
/// with a writable layer on top, in the foreground, and exits with its status
/// (128+N when signal N killed it; 125 when kiln itself failed). kiln is not a container
/// runtime: no published ports, no detached containers, no restart policies, no named
/// volumes. The command is PID 1 of its own pid namespace (no init: `echo $$` prints 1),
/// so, as for any PID 1, only the signals it handles reach it. Without --rm the
/// writable layer is kept (its id is printed) until `kiln prune`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "kiln is not a container runtime: no published ports, no detached \
runs, no restart policies, no named volumes (-p/--publish, -d/--detach and --restart are \
refused). The command is PID 1 of its own pid namespace, with no init (echo $$ prints 1), \
so only the signals it handles reach it; kiln forwards INT, TERM, HUP, QUIT, USR1 and \
USR2. With -t the terminal's size follows yours. Exit status: the command's, 128+N when \
signal N killed it, 125 when kiln failed. Without --rm the writable layer is kept (its id \
is printed) until kiln prune."
)]
pub(crate) struct RunArgs {
    /// Keep stdin open: the command reads kiln's stdin
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    /// Give the command a terminal (a pty in the sandbox; with -i, yours is relayed to it
    /// in raw mode)
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    /// Remove the writable layer when the command exits
    #[arg(long)]
    pub(crate) rm: bool,
    /// Set an environment variable: KEY=VALUE, or KEY to take kiln's own value
    /// (repeatable)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Bind a host path: /HOST:/CONTAINER[:ro|rw] (repeatable; the host path must exist)
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    pub(crate) volumes: Vec<String>,
    /// Working directory inside the sandbox (absolute) instead of the image's WorkingDir
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// User as uid[:gid] or name[:group] instead of the image's User
    #[arg(short = 'u', long)]
    pub(crate) user: Option<String>,
    /// Network: default (own namespace with NAT), none (only lo) or host (the host's)
    #[arg(long, default_value = "default", value_name = "MODE")]
    pub(crate) network: String,
    /// Replace the image's Entrypoint (and drop its Cmd); "" clears it
    #[arg(long, value_name = "CMD")]
    pub(crate) entrypoint: Option<String>,
    /// Refused: kiln publishes no ports
    #[arg(short = 'p', long = "publish", hide = true)]
    pub(crate) publish: Vec<String>,
    /// Refused: kiln runs in the foreground only
    #[arg(short = 'd', long = "detach", hide = true)]
    pub(crate) detach: bool,
    /// Refused: kiln has no restart policies
    #[arg(long = "restart", hide = true)]
    pub(crate) restart: Option<String>,
    /// The image (name, id or digest), then the command and its arguments (replacing
    /// the image's Cmd)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [COMMAND [ARG...]]"
    )]
    pub(crate) args: Vec<String>,
}

pub(crate) fn run(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<ExitCode> {
    match run_inner(global, args) {
        Ok(code) => Ok(code),
        Err(err) => {
            // docker run's convention: 125 when the runner, not the command, failed.
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            Ok(ExitCode::from(125))
        }
    }
}

/// What the command line asks of the image's config.
#[derive(Debug, Default, Clone)]
pub(crate) struct Overrides {
    pub(crate) entrypoint: Option<String>,
    pub(crate) cmd: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) workdir: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) tty: bool,
    pub(crate) hostname: String,
}

/// The process `docker run` starts for an image config and its flags.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Process {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) cwd: String,
    pub(crate) user: String,
}

/// docker's rules (moby `daemon/commit.go` `merge`, `daemon/create.go`
/// `mergeAndVerifyConfig`, `daemon/container.go` `getEntrypointAndArgs`,
/// `daemon/container/container.go` `CreateDaemonEnvironment`): `--entrypoint X` replaces
/// the Entrypoint and drops the image's Cmd; without it, a command given replaces the Cmd;
/// `--entrypoint ""` clears the Entrypoint; the process is Entrypoint + Cmd. Env: the
/// flags' variables, then the image's whose names the flags do not set, over the
/// defaults `PATH`, `HOSTNAME` and, with a terminal, `TERM=xterm`.
pub(crate) fn resolve(image: &ContainerConfig, over: &Overrides) -> anyhow::Result<Process> {
    let mut entrypoint: Option<Vec<String>> = over.entrypoint.clone().map(|e| vec![e]);
    let mut cmd = over.cmd.clone();
    if entrypoint.as_ref().is_none_or(Vec::is_empty) {
        if cmd.is_empty() {
            cmd = image.cmd.clone().unwrap_or_default();
        }
        if entrypoint.is_none() {
            entrypoint = image.entrypoint.clone();
        }
    }
    if entrypoint.as_deref() == Some(&[String::new()][..]) {
        entrypoint = None;
    }
    let mut argv = entrypoint.unwrap_or_default();
    argv.extend(cmd);
    if argv.is_empty() {
        anyhow::bail!(
            "no command specified: the image has no Entrypoint or Cmd; give the command after the image name"
        );
    }
    let mut merged = over.env.clone();
    for var in &image.env {
        let key = env_key(var);
        if !over.env.iter().any(|e| env_key(e) == key) {
            merged.push(var.clone());
        }
    }
    let mut env = vec![
        format!("PATH={}", kiln_sandbox::DEFAULT_PATH),
        format!("HOSTNAME={}", over.hostname),
    ];
    if over.tty {
        env.push("TERM=xterm".to_owned());
    }
    for var in merged {
        match env.iter_mut().find(|e| env_key(e) == env_key(&var)) {
            Some(slot) => *slot = var,
            None => env.push(var),
        }
    }
    let cwd = match &over.workdir {
        Some(dir) => dir.clone(),
        None if !image.working_dir.is_empty() => image.working_dir.clone(),
        None => "/".to_owned(),
    };
    let user = over.user.clone().unwrap_or_else(|| image.user.clone());
    Ok(Process {
        argv,
        env,
        cwd,
        user,
    })
}

fn env_key(var: &str) -> &str {
    var.split_once('=').map_or(var, |(k, _)| k)
}

/// `-e KEY=VALUE`, or `-e KEY` with kiln's own value (docker drops a KEY kiln lacks).
fn env_flags(flags: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for flag in flags {
        match flag.split_once('=') {
            Some(("", _)) => anyhow::bail!("-e {flag:?}: the variable has no name"),
            Some(_) => out.push(flag.clone()),
            None if flag.is_empty() => anyhow::bail!("-e needs KEY=VALUE"),
            None => {
                if let Ok(value) = std::env::var(flag) {
                    out.push(format!("{flag}={value}"));
                }
            }
        }
    }
    Ok(out)
}

/// `-v /HOST:/CONTAINER[:ro|rw]`.
fn volume(flag: &str) -> anyhow::Result<ExtraMount> {
    let parts: Vec<&str> = flag.split(':').collect();
    let (host, target, readonly) = match parts.as_slice() {
        [host, target] => (*host, *target, false),
        [host, target, "ro"] => (*host, *target, true),
        [host, target, "rw"] => (*host, *target, false),
        [_, _, other] => anyhow::bail!(
            "-v {flag}: unknown option {other:?}; kiln takes ro or rw (no SELinux labels or propagation modes)"
        ),
        _ => anyhow::bail!("-v {flag}: give /HOST:/CONTAINER[:ro]"),
    };
    if !host.starts_with('/') {
        anyhow::bail!(
            "-v {flag}: {host:?} is not an absolute host path; kiln has no named volumes, bind a host directory (-v /abs/dir:{target})"
        );
    }
    if !target.starts_with('/') {
        anyhow::bail!("-v {flag}: the container path {target:?} must be absolute");
    }
    let source = PathBuf::from(host);
    if !source.exists() {
        anyhow::bail!(
            "-v {flag}: {host} does not exist; create it first (kiln does not create host paths)"
        );
    }
    Ok(ExtraMount::Bind {
        source,
        target: target.to_owned(),
        readonly,
    })
}

pub(crate) fn network(text: &str) -> anyhow::Result<Network> {
    Ok(match text {
        "default" | "bridge" => Network::Default,
        "none" => Network::None,
        "host" => Network::Host,
        other => anyhow::bail!("unknown --network {other:?}: use default, none or host"),
    })
}

fn run_inner(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<ExitCode> {
    if !args.publish.is_empty() {
        anyhow::bail!(
            "-p/--publish: kiln run does not publish ports; kiln is not a container runtime (use --network host to reach the command's ports, or docker/podman)"
        );
    }
    if args.detach {
        anyhow::bail!(
            "-d/--detach: kiln run does not detach; it runs the command in the foreground (kiln is not a container runtime)"
        );
    }
    if args.restart.is_some() {
        anyhow::bail!(
            "--restart: kiln run has no restart policies; kiln is not a container runtime"
        );
    }
    if args.interactive && args.tty && !std::io::stdin().is_terminal() {
        anyhow::bail!("-it: the input device is not a terminal; drop -t, or run kiln from one");
    }
    let network = network(&args.network)?;
    if let Some(dir) = &args.workdir
        && !dir.starts_with('/')
    {
        anyhow::bail!("-w {dir:?}: the working directory must be an absolute path");
    }
    let env = env_flags(&args.env)?;
    let mounts = args
        .volumes
        .iter()
        .map(|v| volume(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (image, cmd) = args.args.split_first().context("give the image to run")?;

    let engine = crate::cmd::store::open_engine(global)?;
    let rootfs = engine.prepare_run(image)?;
    let hostname = rootfs.layer_id().as_str().to_owned();
    let over = Overrides {
        entrypoint: args.entrypoint.clone(),
        cmd: cmd.to_vec(),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
        hostname: hostname.clone(),
    };
    let process = match resolve(&rootfs.image.image.config.config, &over) {
        Ok(p) => p,
        Err(e) => {
            let _ = engine.finish_run(rootfs, false);
            return Err(e);
        }
    };
    let mut spec = Spec::new(
        kiln_solver::solve::to_sandbox_mounts(rootfs.mounts.clone()),
        process.argv,
    );
    spec.env = process.env;
    spec.cwd = process.cwd;
    spec.user = process.user;
    spec.hostname = hostname;
    spec.network = network;
    spec.mounts = mounts;
    let status = attached(&spec, args.interactive, args.tty);
    let kept = engine.finish_run(rootfs, !args.rm);
    let status = status?;
    if let Some((id, dir)) = kept.context("remove the writable layer")? {
        let _ = writeln!(
            std::io::stderr(),
            "kiln: kept the writable layer {} ({}); kiln prune removes it",
            id.as_str(),
            dir.display()
        );
    }
    Ok(ExitCode::from(status.code().clamp(0, 255) as u8))
}

/// The signals forwarded to the command.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Runs `spec` on kiln's own streams: stdin with `interactive` (else `/dev/null`), a pty
/// with `tty` (kiln's terminal in raw mode and relayed to it when stdin is one, its
/// window size followed), kiln's signals forwarded to the command.
pub(crate) fn attached(spec: &Spec, interactive: bool, tty: bool) -> anyhow::Result<ExitStatus> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| -> anyhow::Result<OwnedFd> {
        fd.try_clone_to_owned()
            .context("duplicate a standard stream")
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stdin_is_tty = stdin.is_terminal();
    let terminal = tty.then(|| {
        kiln_sandbox::pty::window_size(stdin.as_fd())
            .or_else(|| kiln_sandbox::pty::window_size(stdout.as_fd()))
            .unwrap_or(WindowSize { rows: 24, cols: 80 })
    });
    let attach = Attach {
        stdin: match interactive && !tty {
            true => Some(dup(stdin.as_fd())?),
            false => None,
        },
        stdout: dup(stdout.as_fd())?,
        stderr: dup(std::io::stderr().as_fd())?,
        terminal,
    };
    let cancel = CancelHandle::new();
    let master: Arc<Mutex<Option<OwnedFd>>> = Arc::default();
    let forwarder = forward_signals(cancel.clone(), Arc::clone(&master))?;
    let raw = match (tty, interactive, stdin_is_tty) {
        (true, true, true) => {
            Some(RawMode::enable(stdin.as_fd()).context("put the terminal in raw mode")?)
        }
        _ => None,
    };
    let mut relay = None;
    let status = kiln_sandbox::run_attached(
        spec,
        attach,
        &mut |fd| {
            if let Ok(copy) = fd.try_clone() {
                *master.lock().unwrap_or_else(PoisonError::into_inner) = Some(copy);
            }
            relay = Some(start_relay(fd, interactive));
        },
        &cancel,
    );
    if let Some(output) = relay {
        // Ends at EIO: every process holding the pty's slave is gone.
        let _ = output.join();
    }
    drop(raw);
    forwarder.stop();
    Ok(status?)
}

/// Copies the pty's output to kiln's stdout (returned: joined at the end) and, when
/// `interactive`, kiln's stdin to the pty (on a thread left to end with the process or
/// at its next write, since a read of stdin cannot be interrupted).
fn start_relay(master: OwnedFd, interactive: bool) -> std::thread::JoinHandle<()> {
    if interactive && let Ok(input) = master.try_clone() {
        std::thread::spawn(move || {
            let mut input = File::from(input);
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => {
                        // EOF on a pipe: the terminal's end-of-file character.
                        let _ = input.write_all(&[4]);
                        break;
                    }
                    Ok(n) => {
                        if input.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
    }
    std::thread::spawn(move || {
        let mut output = File::from(master);
        let mut stdout = std::io::stdout();
        let mut buf = [0u8; 8192];
        loop {
            match output.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if stdout
                        .write_all(&buf[..n])
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO: the slave side is closed for good.
                Err(_) => break,
            }
        }
    })
}

/// The thread that forwards kiln's signals to the command and its terminal size to the
/// pty, until stopped.
struct Forwarder {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn forward_signals(
    cancel: CancelHandle,
    master: Arc<Mutex<Option<OwnedFd>>>,
) -> anyhow::Result<Forwarder> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("start the signal thread")?;
    // Registered here, before the command starts, so no signal falls in a gap.
    let mut streams = Vec::new();
    let _guard = runtime.enter();
    for sig in FORWARDED {
        let stream =
            signal(SignalKind::from_raw(*sig as i32)).with_context(|| format!("handle {sig}"))?;
        streams.push((*sig, stream));
    }
    let mut winch = signal(SignalKind::window_change()).context("handle SIGWINCH")?;
    drop(_guard);
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Signal>();
            for (sig, mut stream) in streams {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if tx.send(sig).is_err() {
                            break;
                        }
                    }
                });
            }
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    Some(sig) = rx.recv() => {
                        cancel.signal(sig);
                    }
                    Some(()) = winch.recv() => {
                        let size = kiln_sandbox::pty::window_size(std::io::stdin().as_fd())
                            .or_else(|| kiln_sandbox::pty::window_size(std::io::stdout().as_fd()));
                        let master = master.lock().unwrap_or_else(PoisonError::into_inner);
                        if let (Some(size), Some(fd)) = (size, master.as_ref()) {
                            let _ = kiln_sandbox::pty::set_window_size(fd.as_fd(), size);
                        }
                    }
                }
            }
        });
    });
    Ok(Forwarder {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        ContainerConfig {
            entrypoint: entrypoint.map(own),
            cmd: cmd.map(own),
            ..ContainerConfig::default()
        }
    }

    fn check(
        image: &ContainerConfig,
        entrypoint: Option<&str>,
        cmd: &[&str],
        expected: Option<&[&str]>,
    ) {
        let over = Overrides {
            entrypoint: entrypoint.map(str::to_owned),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            ..Overrides::default()
        };
        let got = resolve(image, &over).ok().map(|p| p.argv);
        let expected: Option<Vec<String>> =
            expected.map(|v| v.iter().map(|s| (*s).to_owned()).collect());
        assert_eq!(got, expected, "entrypoint {entrypoint:?} cmd {cmd:?}");
    }

    #[test]
    fn entrypoint_and_cmd_as_docker_run() {
        let both = config(Some(&["/ep", "a"]), Some(&["c1", "c2"]));
        check(&both, None, &[], Some(&["/ep", "a", "c1", "c2"]));
        check(&both, None, &["x", "y"], Some(&["/ep", "a", "x", "y"]));
        // --entrypoint drops the image's Cmd.
        check(&both, Some("/other"), &[], Some(&["/other"]));
        check(&both, Some("/other"), &["x"], Some(&["/other", "x"]));
        // --entrypoint "" clears it; the image's Cmd is not taken back.
        check(&both, Some(""), &[], None);
        check(&both, Some(""), &["x"], Some(&["x"]));
        let cmd_only = config(None, Some(&["/bin/sh", "-c", "echo hi"]));
        check(&cmd_only, None, &[], Some(&["/bin/sh", "-c", "echo hi"]));
        check(&cmd_only, None, &["ls"], Some(&["ls"]));
        check(&config(None, None), None, &[], None);
    }

    #[test]
    fn env_as_docker_run() {
        let image = ContainerConfig {
            env: vec!["PATH=/img".into(), "A=1".into(), "B=2".into()],
            ..ContainerConfig::default()
        };
        let over = Overrides {
            cmd: vec!["x".into()],
            env: vec!["B=flag".into(), "C=3".into()],
            tty: true,
            hostname: "h".into(),
            ..Overrides::default()
        };
        let got = resolve(&image, &over).expect("resolves").env;
        assert_eq!(
            got,
            [
                "PATH=/img",
                "HOSTNAME=h",
                "TERM=xterm",
                "B=flag",
                "C=3",
                "A=1"
            ]
        );
    }

    #[test]
    fn volumes_checked() {
        assert!(volume("/:/mnt:ro").is_ok());
        assert!(
            volume("rel:/mnt")
                .unwrap_err()
                .to_string()
                .contains("named volumes")
        );
        assert!(
            volume("/:mnt")
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
        assert!(
            volume("/:/mnt:z")
                .unwrap_err()
                .to_string()
                .contains("unknown option")
        );
        assert!(
            volume("/nonexistent-kiln:/mnt")
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }
}

/// `kiln build --on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum OnError {
    /// The build fails; the step's state is removed
    #[default]
    Fail,
    /// A shell (a real pty) in the failed RUN's sandbox; leaving it ends the build
    Shell,
    /// Keep the failed RUN's state for `kiln debug shell ID`
    Keep,
}

impl OnError {
    /// What `--on-error` needs before anything runs: a terminal for `shell`, a local
    /// build for both.
    pub(crate) fn check(self, host: Option<&str>) -> anyhow::Result<()> {
        let name = match self {
            OnError::Fail => return Ok(()),
            OnError::Shell => "shell",
            OnError::Keep => "keep",
        };
        if let Some(host) = host {
            anyhow::bail!(
                "--on-error={name} does not work through --host {host}: the failed step's sandbox lives on the server; run the build on the server's machine without --host"
            );
        }
        if self == OnError::Shell && !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "--on-error=shell needs a terminal, and stdin is not one; run kiln from a terminal, or use --on-error=keep and open the shell later with kiln debug shell ID"
            );
        }
        Ok(())
    }
}

/// What `--on-error` saw: the failed RUN's exit code (kiln build exits with it) and the
/// ids `keep` kept, for the lines printed after the failure.
#[derive(Debug, Default)]
pub(crate) struct Failed {
    code: Option<i32>,
    kept: Vec<String>,
}

pub(crate) type KeptIds = Arc<Mutex<Failed>>;

struct ShellHook(KeptIds);

impl kiln_solver::solve::OnFailedStep for ShellHook {
    fn failed(&self, step: &kiln_solver::solve::FailedStep) -> bool {
        {
            // One shell per build: a step failing while the first one's shell is open
            // (or after it) only fails.
            let mut failed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if failed.code.is_some() {
                return false;
            }
            failed.code = Some(step.code);
        }
        let _paused = crate::progress::pause();
        let _ = writeln!(
            std::io::stderr(),
            "\nkiln: {} failed (exit code {}); a shell in its sandbox, as the command left it. Leave it (exit) to end the build.",
            step.label,
            step.code
        );
        let status = attached(&shell_spec(step.spec.clone(), Vec::new()), true, true);
        if let Err(e) = status {
            let _ = writeln!(std::io::stderr(), "kiln: the shell failed: {e:#}");
        }
        false
    }
}

struct KeepHook {
    engine: kiln_engine::Engine,
    kept: KeptIds,
}

impl kiln_solver::solve::OnFailedStep for KeepHook {
    fn failed(&self, step: &kiln_solver::solve::FailedStep) -> bool {
        let mut failed = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        failed.code.get_or_insert(step.code);
        match self.engine.keep_failed_step(step) {
            Ok(id) => {
                failed.kept.push(id);
                true
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "kiln: could not keep the failed step: {e:#}"
                );
                false
            }
        }
    }
}

/// The solver's hook for `--on-error`, and where `keep` leaves its ids.
pub(crate) fn failed_step_hook(
    mode: OnError,
    engine: &kiln_engine::Engine,
) -> (Option<kiln_solver::solve::FailedStepHook>, KeptIds) {
    let kept = KeptIds::default();
    let hook: Option<Arc<dyn kiln_solver::solve::OnFailedStep>> = match mode {
        OnError::Fail => None,
        OnError::Shell => Some(Arc::new(ShellHook(Arc::clone(&kept)))),
        OnError::Keep => Some(Arc::new(KeepHook {
            engine: engine.clone(),
            kept: Arc::clone(&kept),
        })),
    };
    (hook.map(kiln_solver::solve::FailedStepHook), kept)
}

/// Prints, after a failed build, how to open a shell in each kept step; returns the
/// failed RUN's exit code, which `kiln build --on-error=shell|keep` exits with.
pub(crate) fn print_kept(kept: &KeptIds) -> Option<ExitCode> {
    let failed = kept.lock().unwrap_or_else(PoisonError::into_inner);
    for id in &failed.kept {
        let _ = writeln!(
            std::io::stderr(),
            "kiln: the failed step's state is kept; open a shell in it with: kiln debug shell {id}   (kiln prune removes it)"
        );
    }
    failed
        .code
        .map(|code| ExitCode::from(code.clamp(1, 255) as u8))
}

/// A failed step's spec with a shell (or `command`) for its command.
fn shell_spec(mut spec: Spec, command: Vec<String>) -> Spec {
    spec.argv = match command.is_empty() {
        true => vec!["sh".to_owned()],
        false => command,
    };
    if !spec.env.iter().any(|e| e.starts_with("TERM=")) {
        spec.env.push("TERM=xterm".to_owned());
    }
    spec.timeout = None;
    spec
}

#[derive(Debug, clap::Args)]
pub(crate) struct ShellArgs {
    /// The id `kiln build --on-error=keep` printed
    pub(crate) id: String,
    /// What to run instead of sh
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

/// `kiln debug shell ID`: a shell in a kept failed step (a pty when stdin is a terminal,
/// else kiln's own streams); exits with the shell's status.
pub(crate) fn debug_shell(global: &GlobalArgs, args: ShellArgs) -> anyhow::Result<ExitCode> {
    let engine = crate::cmd::store::open_engine(global)?;
    let (kept, _lock) = engine.kept_step(&args.id)?;
    let mut stderr = std::io::stderr();
    let _ = writeln!(
        stderr,
        "kiln: {} (exit code {}), as the command left it",
        kept.label, kept.code
    );
    for what in &kept.dropped {
        let _ = writeln!(stderr, "kiln: not kept: {what}");
    }
    let tty = std::io::stdin().is_terminal();
    let status = attached(&shell_spec(kept.spec, args.command), true, tty)?;
    Ok(ExitCode::from(status.code().clamp(0, 255) as u8))
}
