//! A RUN's `--mount`s: what they add to the sandbox, and what is undone after it.

use super::*;
use crate::ops::CacheSeed;
use std::os::unix::fs::MetadataExt as _;

/// What a RUN's `--mount`s add to its sandbox, and what to undo afterwards.
#[derive(Default)]
pub(super) struct Extras {
    /// Trees mounted on top of the rootfs (binds from stages, images, the context).
    pub(super) rootfs: Vec<kiln_sandbox::Mount>,
    /// Host paths, tmpfs and secrets.
    pub(super) mounts: Vec<kiln_sandbox::ExtraMount>,
    /// Variables set for the step only (secrets as env, `SSH_AUTH_SOCK`).
    pub(super) env: Vec<String>,
    /// Temp dirs and files to remove after the step.
    temps: Vec<PathBuf>,
    /// Locks held on cache mounts while the step runs.
    locks: Vec<std::fs::File>,
    /// The ssh sockets made for the step.
    forwards: Vec<crate::ssh_forward::SshForward>,
}

/// A path in the store's temp dir that no other step, build or process uses: a
/// process-wide counter, the time and the process id hashed together.
pub(super) fn fresh_temp_path(store: &Store, what: &str) -> Result<PathBuf, StepError> {
    let base = store.tmp_dir();
    std::fs::create_dir_all(&base).map_err(|e| io_err(&base, e))?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = format!(
        "{what}{}{:?}{}",
        std::process::id(),
        std::time::SystemTime::now(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    Ok(base.join(format!(
        "{what}-{}",
        &blake3::hash(seed.as_bytes()).to_hex()[..16]
    )))
}

impl Extras {
    /// A fresh path in the store's temp dir, removed by `clean_up`.
    pub(super) fn temp(&mut self, shared: &Shared, what: &str) -> Result<PathBuf, StepError> {
        let path = fresh_temp_path(&shared.store, what)?;
        self.temps.push(path.clone());
        Ok(path)
    }

    pub(super) fn prepare(
        &mut self,
        shared: &Shared,
        exec: &ExecOp,
        inputs: &[Done],
    ) -> Result<(), StepError> {
        for mount in &exec.mounts {
            match mount {
                ExecMount::Bind {
                    input,
                    source,
                    target,
                    rw,
                    context,
                } => {
                    let snapshot = inputs.get(*input).and_then(|d| d.snapshot.clone());
                    let rel = if let Some(name) = context {
                        context_mount_source(shared, name, source)
                    } else {
                        source.clone()
                    };
                    self.tree(shared, snapshot.as_ref(), &rel, target, *rw)?;
                }
                ExecMount::Cache {
                    id,
                    target,
                    sharing,
                    seed,
                    readonly,
                } => {
                    let dir = self.cache_dir(shared, id, sharing, seed, inputs)?;
                    self.mounts.push(kiln_sandbox::ExtraMount::Bind {
                        source: dir,
                        target: target.clone(),
                        readonly: *readonly,
                    });
                }
                ExecMount::Tmpfs { target, size } => {
                    self.mounts.push(kiln_sandbox::ExtraMount::Tmpfs {
                        target: target.clone(),
                        size: (*size > 0).then_some(*size),
                        mode: None,
                    });
                }
                ExecMount::Secret {
                    id,
                    target,
                    env,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(source) = shared.secrets.get(id) else {
                        if *required {
                            return Err(StepError::MissingSecret { id: id.clone() });
                        }
                        continue;
                    };
                    let value: Vec<u8> = match source {
                        SecretSource::File(path) => crate::input_file::read_regular_file(
                            path,
                            &format!("--secret id={id}"),
                            crate::input_file::MAX_SECRET_SIZE,
                        )
                        .map_err(|e| StepError::Secret {
                            id: id.clone(),
                            reason: e.to_string(),
                        })?,
                        SecretSource::Env(var) => std::env::var_os(var)
                            .ok_or_else(|| StepError::MissingSecret {
                                id: format!("{id} (environment variable {var} is not set)"),
                            })?
                            .into_encoded_bytes(),
                        SecretSource::Value(value) => value.0.to_vec(),
                    };
                    if value.len() as u64 > crate::input_file::MAX_SECRET_SIZE {
                        return Err(StepError::Secret {
                            id: id.clone(),
                            reason: format!(
                                "the value is larger than {} bytes, the most kiln passes",
                                crate::input_file::MAX_SECRET_SIZE
                            ),
                        });
                    }
                    if let Some(var) = env {
                        self.env
                            .push(format!("{var}={}", String::from_utf8_lossy(&value)));
                    }
                    if let Some(target) = target {
                        // A file secret is bound from where it is; one from the
                        // environment needs a file, private to root, gone after the step.
                        let source_file = match source {
                            SecretSource::File(path) => path.clone(),
                            SecretSource::Env(_) | SecretSource::Value(_) => {
                                let path = self.temp(shared, "secret")?;
                                write_private(&path, &value)?;
                                path
                            }
                        };
                        self.mounts.push(kiln_sandbox::ExtraMount::Secret {
                            source: source_file,
                            target: target.clone(),
                            mode: Some(*mode),
                            uid: Some(*uid),
                            gid: Some(*gid),
                        });
                    }
                }
                ExecMount::File {
                    target,
                    content,
                    mode,
                } => {
                    let path = self.temp(shared, "script")?;
                    std::fs::write(&path, content).map_err(|e| io_err(&path, e))?;
                    std::fs::set_permissions(
                        &path,
                        std::os::unix::fs::PermissionsExt::from_mode(*mode),
                    )
                    .map_err(|e| io_err(&path, e))?;
                    self.mounts.push(kiln_sandbox::ExtraMount::Bind {
                        source: path,
                        target: target.clone(),
                        readonly: true,
                    });
                }
                ExecMount::Ssh {
                    id,
                    target,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(agent) = shared.ssh.get(id).cloned().flatten() else {
                        if *required || shared.ssh.contains_key(id) {
                            return Err(StepError::MissingSsh { id: id.clone() });
                        }
                        continue;
                    };
                    let dir = self.temp(shared, "ssh")?;
                    // Only root may enter: the socket's own mode is for the step.
                    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                        .create(&dir)
                        .map_err(|e| io_err(&dir, e))?;
                    let socket = dir.join("step.sock");
                    let forward =
                        crate::ssh_forward::SshForward::start(&agent, &socket, *mode, (*uid, *gid))
                            .map_err(|e| io_err(&socket, e))?;
                    self.forwards.push(forward);
                    self.mounts.push(kiln_sandbox::ExtraMount::Bind {
                        source: socket,
                        target: target.clone(),
                        readonly: false,
                    });
                    self.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
            }
        }
        Ok(())
    }

    /// Mounts `rel` of a snapshot's tree at `target`: a bind of a file or of a single
    /// layer, else a read-only overlay of the layers that hold the directory; `rw` adds a
    /// throw-away upper dir.
    pub(super) fn tree(
        &mut self,
        shared: &Shared,
        snapshot: Option<&SnapshotId>,
        rel: &str,
        target: &str,
        rw: bool,
    ) -> Result<(), StepError> {
        let layers = match snapshot {
            Some(id) => shared.store.snapshots().layers(id)?,
            None => Vec::new(),
        };
        let rel = crate::meta::clean_abs(rel);
        let view = LayeredView::new(layers.clone());
        let resolved = view.resolve(&rel, true)?;
        let mut lowers: Vec<PathBuf> = Vec::new();
        match view.lstat(&resolved)? {
            None if resolved == "/" => {
                let empty = self.temp(shared, "empty")?;
                std::fs::create_dir_all(&empty).map_err(|e| io_err(&empty, e))?;
                lowers.push(empty);
            }
            None => {
                return Err(StepError::SourceNotFound {
                    path: rel,
                    ignored_by: None,
                });
            }
            Some(found) if !found.meta.is_dir() => {
                let source = if rw {
                    let copy = self.temp(shared, "bind")?;
                    std::fs::copy(&found.host_path, &copy).map_err(|e| io_err(&copy, e))?;
                    copy
                } else {
                    found.host_path.clone()
                };
                self.mounts.push(kiln_sandbox::ExtraMount::Bind {
                    source,
                    target: target.to_owned(),
                    readonly: !rw,
                });
                return Ok(());
            }
            Some(_) => {
                // Each layer is walked one component at a time with lstat: the kernel
                // must never resolve a path inside a layer (a link there points into the
                // host), and a file, whiteout or opaque directory on the way hides what
                // the layers below hold.
                let parts: Vec<&str> = resolved.split('/').filter(|p| !p.is_empty()).collect();
                'layers: for layer in &layers {
                    let mut path = layer.clone();
                    let mut hides_below = false;
                    for (i, part) in parts.iter().enumerate() {
                        path.push(part);
                        match std::fs::symlink_metadata(&path) {
                            Ok(meta) if meta.is_dir() => {
                                hides_below |= crate::layered_view::is_opaque(&path);
                            }
                            Ok(_) => break 'layers,
                            Err(_) if i == 0 || !hides_below => continue 'layers,
                            Err(_) => break 'layers,
                        }
                    }
                    lowers.push(path);
                    if hides_below {
                        break;
                    }
                }
            }
        }
        let lowerdir: Vec<String> = lowers
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if !rw && lowerdir.len() == 1 {
            self.rootfs.push(kiln_sandbox::Mount {
                kind: "bind".to_owned(),
                source: lowerdir[0].clone(),
                target: target.to_owned(),
                options: vec!["rbind".to_owned(), "ro".to_owned()],
            });
            return Ok(());
        }
        let mut options = vec![format!("lowerdir={}", lowerdir.join(":"))];
        if rw {
            let scratch = self.temp(shared, "bind-rw")?;
            let (upper, work) = (scratch.join("upper"), scratch.join("work"));
            for dir in [&upper, &work] {
                std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
            }
            options.push(format!("upperdir={}", upper.display()));
            options.push(format!("workdir={}", work.display()));
        } else {
            options.push("ro".to_owned());
        }
        self.rootfs.push(kiln_sandbox::Mount {
            kind: "overlay".to_owned(),
            source: "overlay".to_owned(),
            target: target.to_owned(),
            options,
        });
        Ok(())
    }

    /// The persistent directory of a cache mount (made on first use from its seed),
    /// taken as `sharing` says, as BuildKit's cache mounts: `shared` uses the cache's
    /// directory as it is; `locked` takes a free instance of the cache or waits for the
    /// first; `private` takes a free instance or makes another one, which is kept (a later
    /// step may be given either).
    pub(super) fn cache_dir(
        &mut self,
        shared: &Shared,
        id: &str,
        sharing: &str,
        seed: &CacheSeed,
        inputs: &[Done],
    ) -> Result<PathBuf, StepError> {
        let base = shared.store.cache_mounts_dir();
        std::fs::create_dir_all(&base).map_err(|e| io_err(&base, e))?;
        let name = cache_dir_name(id, seed, inputs);
        let instance = |n: usize| match n {
            0 => name.clone(),
            n => format!("{name}.{n}"),
        };
        let open_lock = |n: usize| {
            let path = base.join(format!("{}.lock", instance(n)));
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))
        };
        let n = match sharing {
            "shared" => 0,
            _ => {
                // The first instance nobody holds; else `locked` waits for the first,
                // `private` makes the next.
                let mut taken = None;
                let mut n = 0;
                while n == 0 || base.join(instance(n)).exists() {
                    let lock = open_lock(n)?;
                    if lock.try_lock().is_ok() {
                        taken = Some((n, lock));
                        break;
                    }
                    n += 1;
                }
                let (n, lock) = match (taken, sharing) {
                    (Some(taken), _) => taken,
                    (None, "locked") => {
                        let lock = open_lock(0)?;
                        lock.lock().map_err(|e| io_err(&base, e))?;
                        (0, lock)
                    }
                    (None, _) => loop {
                        // Another process may make instance n meanwhile: take the
                        // first one whose lock is free.
                        let lock = open_lock(n)?;
                        if lock.try_lock().is_ok() {
                            break (n, lock);
                        }
                        n += 1;
                    },
                };
                self.locks.push(lock);
                n
            }
        };
        let dir = base.join(instance(n));
        if !dir.exists() {
            // Made beside and renamed, so a concurrent first use never sees half of it.
            let fresh = self.temp(shared, "cache-new")?;
            self.seed_cache(shared, &fresh, seed, inputs)?;
            if std::fs::rename(&fresh, &dir).is_err() && !dir.exists() {
                return Err(StepError::Internal(format!(
                    "could not create the cache mount {}",
                    dir.display()
                )));
            }
        }
        Ok(dir)
    }

    /// Makes `dir`, a cache's first content: empty, or a copy of its `from=` tree.
    fn seed_cache(
        &mut self,
        shared: &Shared,
        dir: &std::path::Path,
        seed: &CacheSeed,
        inputs: &[Done],
    ) -> Result<(), StepError> {
        match seed {
            CacheSeed::Empty => make_dir(dir, 0o755, (0, 0)),
            CacheSeed::Dir { mode, uid, gid } => make_dir(dir, *mode, (*uid, *gid)),
            CacheSeed::Input {
                input,
                source,
                context,
                or_dir,
            } => {
                let layers = match inputs.get(*input).and_then(|d| d.snapshot.as_ref()) {
                    Some(id) => shared.store.snapshots().layers(id)?,
                    None => Vec::new(),
                };
                let rel = match context {
                    Some(name) => context_mount_source(shared, name, source),
                    None => source.clone(),
                };
                let view = LayeredView::new(layers);
                let resolved = view.resolve(&crate::meta::clean_abs(&rel), true)?;
                match view.lstat(&resolved)? {
                    Some(found) if found.meta.is_dir() => {
                        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
                        let below = LayeredView::new(Vec::new());
                        let options = crate::ops::copy::CopyOptions {
                            dest_is_dir: true,
                            ..Default::default()
                        };
                        crate::ops::copy::copy(
                            &crate::ops::copy::CopyFrom::Tree(&view),
                            &[resolved.trim_start_matches('/').to_owned()],
                            "/",
                            dir,
                            &below,
                            &options,
                        )?;
                        // The root is the source directory itself: its owner and mode.
                        let meta = &found.meta;
                        std::os::unix::fs::lchown(dir, Some(meta.uid()), Some(meta.gid()))
                            .map_err(|e| io_err(dir, e))?;
                        std::fs::set_permissions(
                            dir,
                            std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
                        )
                        .map_err(|e| io_err(dir, e))
                    }
                    None if resolved == "/" => make_dir(dir, 0o755, (0, 0)),
                    None => match or_dir {
                        Some((mode, uid, gid)) => make_dir(dir, *mode, (*uid, *gid)),
                        None => Err(StepError::SourceNotFound {
                            path: rel,
                            ignored_by: None,
                        }),
                    },
                    Some(_) => Err(StepError::Internal(format!(
                        "the cache mount's source {rel} is not a directory"
                    ))),
                }
            }
        }
    }

    pub(super) fn clean_up(&mut self) {
        self.forwards.clear();
        for path in self.temps.drain(..) {
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::remove_file(&path);
        }
        self.locks.clear();
    }
}

/// The store's name for one cache: BuildKit's key, the id and what the cache started
/// from (`mounts.go` getRefCacheDir: `id + ":" + ref.ID()`), so another owner, mode or
/// `from=` tree is another cache.
fn cache_dir_name(id: &str, seed: &CacheSeed, inputs: &[Done]) -> String {
    let seed_key = match seed {
        CacheSeed::Empty => String::new(),
        CacheSeed::Dir { mode, uid, gid } => format!(":dir {mode:o} {uid} {gid}"),
        // BuildKit's key is the id and the from= input's ref: source= only selects what is
        // mounted, so it is no part of it (`mkdir /cache` for uid/gid/mode makes another
        // ref, so `or_dir` is).
        CacheSeed::Input { input, or_dir, .. } => {
            let from = inputs
                .get(*input)
                .map(|d| d.key.to_hex())
                .unwrap_or_default();
            format!(":from {from} {or_dir:?}")
        }
    };
    blake3::hash(format!("{id}{seed_key}").as_bytes()).to_hex()[..32].to_owned()
}

pub(super) fn make_dir(
    path: &std::path::Path,
    mode: u32,
    owner: (u32, u32),
) -> Result<(), StepError> {
    std::fs::create_dir_all(path).map_err(|e| io_err(path, e))?;
    std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1)).map_err(|e| io_err(path, e))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| io_err(path, e))
}

pub(super) fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), StepError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    file.write_all(bytes).map_err(|e| io_err(path, e))
}

pub(super) fn io_err(path: &std::path::Path, source: std::io::Error) -> StepError {
    StepError::Copy(CopyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Where a bind from the context lands in the copy made of it: a directory's contents
/// are the copy's root, a file keeps its name.
pub(super) fn context_mount_source(shared: &Shared, context: &str, source: &str) -> String {
    let Some(tree) = shared.contexts.get(context) else {
        return "/".to_owned();
    };
    let followed = follow_in_context(tree, source);
    match tree.get(&followed).map(|e| &e.kind) {
        Some(EntryKind::Dir) | None => "/".to_owned(),
        Some(_) => format!("/{}", source.rsplit('/').next().unwrap_or(source)),
    }
}
