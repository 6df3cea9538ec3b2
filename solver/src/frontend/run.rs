//! Lowering RUN: argv through the SHELL (heredocs as BuildKit passes them), the
//! environment and history string, `--mount`s, `--network`, and whether the stage's
//! platform can run here.

use super::*;

impl Lowerer<'_> {
    pub(super) fn run(
        &mut self,
        state: &mut StageState,
        run: &Run,
        span: Span,
        label: String,
        stage: &str,
    ) -> Result<(), LowerError> {
        if !can_run(&state.platform) {
            return Err(LowerError::at(
                span,
                format!(
                    "RUN for {} cannot execute on this {} machine",
                    state.platform,
                    Platform::host()
                ),
            )
            .hint("register an emulator with binfmt_misc (apt-get install qemu-user-static), or build for the host's platform; stages without RUN (cross-compiling with FROM --platform=$BUILDPLATFORM) work as they are"));
        }
        if run.security.as_deref().is_some_and(|s| s != "sandbox") {
            return Err(LowerError::at(
                span,
                format!(
                    "RUN --security={} is not supported: kiln runs every step in its sandbox",
                    run.security.as_deref().unwrap_or_default()
                ),
            )
            .hint("drop the flag; privileged steps cannot run in kiln"));
        }
        let network = match &run.network {
            Some(mode) => {
                NetworkMode::parse(mode).map_err(|e| LowerError::at(span, e.to_string()))?
            }
            None => self.options.network,
        };
        if network == NetworkMode::Host && !self.options.allow.iter().any(|a| a == "network.host") {
            return Err(
                LowerError::at(span, "RUN --network=host needs --allow network.host")
                    .hint("pass --allow network.host to kiln build, or use --network=default"),
            );
        }
        let shell = state.image.config.shell.clone();
        let cwd = match state.image.config.working_dir.as_str() {
            "" => "/".to_owned(),
            dir => dir.to_owned(),
        };
        let mut inputs = vec![state.fs];
        let mut mounts = Vec::new();
        let mut argv = run_argv(run, &shell);
        if let Some(script) = shebang_script(run) {
            // BuildKit runs a `#!` heredoc as a file, not through `sh -c`.
            let target = format!("/dev/pipes/{}", script.0);
            argv = [shell_or_default(&shell), vec![target.clone()]].concat();
            mounts.push(ExecMount::File {
                target,
                content: script.1,
                mode: 0o755,
            });
        }
        for (n, mount) in run.mounts.iter().enumerate() {
            mounts.push(self.exec_mount(mount, n, &cwd, &mut inputs, state.index, span)?);
        }
        let env: Vec<String> = state.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let history = format!(
            "RUN {} # buildkit",
            run_command_string(&argv, &state.args, &state.env)
        );
        let op = Op::Exec(ExecOp {
            argv,
            env,
            cwd,
            user: state.image.config.user.clone(),
            network,
            mounts,
        });
        state.fs = self.add(
            op,
            inputs,
            Step {
                label,
                span: Some(span),
                stage: stage.to_owned(),
            },
        );
        state.layers.push(LayerSource::Vertex(state.fs));
        push_history(&mut state.image, history, true);
        Ok(())
    }

    /// Lowers one `RUN --mount`, adding the vertices it reads to `inputs`.
    pub(super) fn exec_mount(
        &mut self,
        mount: &kiln_parser::ast::Mount,
        n: usize,
        cwd: &str,
        inputs: &mut Vec<VertexId>,
        stage_index: usize,
        span: Span,
    ) -> Result<ExecMount, LowerError> {
        let abs = |path: &str| {
            if path.starts_with('/') {
                clean_abs(path)
            } else {
                clean_abs(&format!("{cwd}/{path}"))
            }
        };
        let target = mount.get(&["target", "dst", "destination"]).map(abs);
        let flag = |keys: &[&str]| {
            mount
                .get(keys)
                .is_some_and(|v| v.is_empty() || v.eq_ignore_ascii_case("true"))
        };
        let number = |keys: &[&str], default: u32, radix: u32| -> Result<u32, LowerError> {
            match mount.get(keys) {
                None => Ok(default),
                Some(v) => u32::from_str_radix(v, radix).map_err(|_| {
                    LowerError::at(span, format!("invalid {} {v:?} in RUN --mount", keys[0]))
                }),
            }
        };
        Ok(match mount.kind.as_str() {
            "bind" => {
                let (input, source, context) =
                    self.mount_source(mount, stage_index, span, inputs)?;
                ExecMount::Bind {
                    input,
                    source,
                    target: target.unwrap_or_else(|| cwd.to_owned()),
                    rw: flag(&["rw", "readwrite"]),
                    context,
                }
            }
            "cache" => {
                let target =
                    target.ok_or_else(|| LowerError::at(span, "a cache mount needs target="))?;
                let perms = match ["mode", "uid", "gid"].map(|k| mount.get(&[k])) {
                    [None, None, None] => None,
                    _ => Some((
                        number(&["mode"], 0o755, 8)? & 0o777,
                        number(&["uid"], 0, 10)?,
                        number(&["gid"], 0, 10)?,
                    )),
                };
                let source = mount.get(&["source", "src"]);
                let seed = match (mount.get(&["from"]), source, perms) {
                    (None, Some(_), _) => {
                        return Err(LowerError::at(
                            span,
                            "a cache mount's source= is a path in its from=, and there is no from=",
                        )
                        .hint("add from=STAGE, or drop source="));
                    }
                    (None, None, None) => CacheSeed::Empty,
                    (None, None, Some((mode, uid, gid))) => CacheSeed::Dir { mode, uid, gid },
                    (Some(_), _, _) => {
                        // BuildKit: a source= is the cache's root (uid, gid and mode then
                        // do nothing); without one, `mkdir /cache` on the from= tree is.
                        let (or_dir, source) = match (source, perms) {
                            (None, Some(perms)) => (Some(perms), "/cache".to_owned()),
                            _ => (None, source.unwrap_or("/").to_owned()),
                        };
                        let (input, source, context) =
                            self.mount_source_at(mount, &source, stage_index, span, inputs)?;
                        CacheSeed::Input {
                            input,
                            source,
                            context,
                            or_dir,
                        }
                    }
                };
                let id = mount
                    .get(&["id"])
                    .map(str::to_owned)
                    .unwrap_or_else(|| target.clone());
                let namespace = self
                    .options
                    .build_args
                    .get("BUILDKIT_CACHE_MOUNT_NS")
                    .map(String::as_str)
                    .unwrap_or_default();
                ExecMount::Cache {
                    id: format!("{namespace}/{id}"),
                    target,
                    sharing: mount.get(&["sharing"]).unwrap_or("shared").to_owned(),
                    seed,
                    readonly: flag(&["ro", "readonly"]),
                }
            }
            "tmpfs" => ExecMount::Tmpfs {
                target: target
                    .ok_or_else(|| LowerError::at(span, "a tmpfs mount needs target="))?,
                size: match mount.get(&["size"]) {
                    None => 0,
                    Some(v) => parse_size(v).ok_or_else(|| {
                        LowerError::at(span, format!("invalid tmpfs size {v:?}"))
                            .hint("write bytes, or a number with k, m or g (e.g. size=64m)")
                    })?,
                },
            },
            "secret" => {
                let env = mount.get(&["env"]).map(str::to_owned);
                let id = match (mount.get(&["id"]), &target) {
                    (Some(id), _) => id.to_owned(),
                    (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_owned(),
                    (None, None) => match &env {
                        Some(e) => e.clone(),
                        None => {
                            return Err(LowerError::at(
                                span,
                                "a secret mount needs id= or target=",
                            )
                            .hint("e.g. --mount=type=secret,id=npmrc"));
                        }
                    },
                };
                let target = match (&target, &env) {
                    (Some(t), _) => Some(t.clone()),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{id}")),
                };
                ExecMount::Secret {
                    id,
                    target,
                    env,
                    required: flag(&["required"]),
                    mode: number(&["mode"], 0o400, 8)?,
                    uid: number(&["uid"], 0, 10)?,
                    gid: number(&["gid"], 0, 10)?,
                }
            }
            "ssh" => {
                if mount.get(&["source", "src"]).is_some() {
                    return Err(LowerError::at(span, "ssh does not support source")
                        .hint("drop source=; target= says where the socket appears"));
                }
                ExecMount::Ssh {
                    id: mount.get(&["id"]).unwrap_or("default").to_owned(),
                    target: target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{n}")),
                    required: flag(&["required"]),
                    mode: number(&["mode"], 0o600, 8)?,
                    uid: number(&["uid"], 0, 10)?,
                    gid: number(&["gid"], 0, 10)?,
                }
            }
            other => {
                return Err(LowerError::at(
                    span,
                    format!("unsupported mount type {other:?}"),
                ));
            }
        })
    }
}

impl Lowerer<'_> {
    /// The tree a bind mount shows: `from=` (a stage, an image, a named context; the
    /// build context when absent) at `source=` (default `/`). Pushes the input vertex and
    /// returns its index, the source path in it, and the context's name when it is one.
    fn mount_source(
        &mut self,
        mount: &kiln_parser::ast::Mount,
        stage_index: usize,
        span: Span,
        inputs: &mut Vec<VertexId>,
    ) -> Result<(usize, String, Option<String>), LowerError> {
        let source = mount.get(&["source", "src"]).unwrap_or("/").to_owned();
        self.mount_source_at(mount, &source, stage_index, span, inputs)
    }

    /// [`Self::mount_source`] with the source path given.
    fn mount_source_at(
        &mut self,
        mount: &kiln_parser::ast::Mount,
        source: &str,
        stage_index: usize,
        span: Span,
        inputs: &mut Vec<VertexId>,
    ) -> Result<(usize, String, Option<String>), LowerError> {
        let resolved = match mount.get(&["from"]) {
            None => FromSource::Context("context".to_owned()),
            Some(from) => self.resolve_from(from, stage_index, span)?,
        };
        let (input, context, source) = match resolved {
            FromSource::Context(name) => {
                let cleaned = crate::context::clean_context_path(source)
                    .map_err(|e| LowerError::at(span, e.to_string()))?;
                (
                    self.context_tree(&name, &cleaned, span),
                    Some(name),
                    cleaned,
                )
            }
            FromSource::Stage(index) => (self.stage_fs(index, span)?, None, clean_abs(source)),
            FromSource::Image(reference) => (
                self.image_vertex(&reference, &self.platform.clone(), span, "")?
                    .0,
                None,
                clean_abs(source),
            ),
        };
        inputs.push(input);
        Ok((inputs.len() - 1, source, context))
    }
}

/// RUN's argv: exec form as written; shell form through the SHELL; heredocs as BuildKit
/// passes them (a whole-command heredoc is the script, others follow the command line).
pub fn run_argv(run: &Run, shell: &[String]) -> Vec<String> {
    match (&run.command, run.heredocs.as_slice()) {
        (Command::Shell(line), [only]) if is_lone_heredoc(line) => {
            command_args(&Command::Shell(only.body.clone()), shell)
        }
        (Command::Shell(line), heredocs) if !heredocs.is_empty() => {
            let mut script = line.clone();
            for heredoc in heredocs {
                script.push('\n');
                script.push_str(&heredoc.body);
                script.push_str(&heredoc.name);
            }
            command_args(&Command::Shell(script), shell)
        }
        (command, _) => command_args(command, shell),
    }
}

pub(super) fn is_lone_heredoc(line: &str) -> bool {
    let line = line.trim();
    line.starts_with("<<") && !line.contains(char::is_whitespace)
}

/// BuildKit's `runCommandString`: `|N K=V ... argv...` with every ARG in scope.
pub(super) fn run_command_string(
    argv: &[String],
    args: &[String],
    env: &Vec<(String, String)>,
) -> String {
    let mut parts = Vec::new();
    if !args.is_empty() {
        parts.push(format!("|{}", args.len()));
        for arg in args {
            parts.push(format!("{arg}={}", env.get_value(arg).unwrap_or_default()));
        }
    }
    parts.extend(argv.iter().cloned());
    parts.join(" ")
}

/// The single `RUN <<EOF` heredoc whose body starts with `#!`: its name and body.
pub(super) fn shebang_script(run: &Run) -> Option<(String, String)> {
    match (&run.command, run.heredocs.as_slice()) {
        (Command::Shell(line), [only]) if is_lone_heredoc(line) && only.body.starts_with("#!") => {
            Some((only.name.clone(), only.body.clone()))
        }
        _ => None,
    }
}

pub(super) fn shell_or_default(shell: &[String]) -> Vec<String> {
    if shell.is_empty() {
        meta::default_shell()
    } else {
        shell.to_vec()
    }
}

/// `64m`, `1g`, `512k` or bytes, as go-units' RAMInBytes reads tmpfs sizes.
pub(super) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_lowercase();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let number: f64 = digits.parse().ok()?;
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    (number >= 0.0).then_some((number * scale as f64) as u64)
}

/// Whether a RUN for `platform` can execute here: the host's own architecture, or one
/// the kernel runs through a registered binfmt_misc emulator.
pub(super) fn can_run(platform: &Platform) -> bool {
    let host = Platform::host();
    if platform.os != host.os {
        return false;
    }
    if platform.architecture == host.architecture {
        return true;
    }
    let qemu = match platform.architecture.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "arm" => "arm",
        "386" => "i386",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    std::path::Path::new(&format!("/proc/sys/fs/binfmt_misc/qemu-{qemu}")).exists()
}
