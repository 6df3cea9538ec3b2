//! The scenarios of issue 9, each with its physical floor where one exists.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::inputs;
use crate::measure::{self, Sample};
use crate::report::Row;

/// Everything the scenarios share: the kiln binary, the output dir, the run count and a
/// busybox root filesystem to import as the base image.
pub(crate) struct World {
    kiln: PathBuf,
    out: PathBuf,
    runs: usize,
    rootfs: PathBuf,
}

/// One scenario: a name for `--only`, a line of explanation, and its runner.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    pub(crate) run: fn(&World) -> Vec<Row>,
}

pub(crate) const ALL: &[Scenario] = &[
    Scenario {
        name: "parse",
        about: "kiln parse of a 10,000-instruction Dockerfile",
        run: parse,
    },
    Scenario {
        name: "parallel",
        about: "three independent stages that each sleep 2 s",
        run: parallel,
    },
    Scenario {
        name: "copy",
        about: "COPY of 10,000 small files + 200 MiB: cold, noop, one-change, touch",
        run: copy,
    },
    Scenario {
        name: "watch",
        about: "kiln build --watch on the copy context: a touch judged (no rebuild), one file rewritten",
        run: watch,
    },
    Scenario {
        name: "run-100m",
        about: "RUN writing 100 MiB, exported to the store and to type=oci",
        run: run_100m,
    },
    Scenario {
        name: "sandbox",
        about: "50 RUN true steps",
        run: sandbox,
    },
    Scenario {
        name: "serve",
        about: "8 concurrent builds through one kiln serve vs 8 processes; no-op through the socket",
        run: serve,
    },
    Scenario {
        name: "push",
        about: "push of the run-100m image to a local docker-registry, kiln vs skopeo",
        run: push,
    },
];

impl World {
    pub(crate) fn new(kiln: PathBuf, out: &Path, runs: usize) -> anyhow::Result<World> {
        let out = fs::canonicalize(out)?;
        let rootfs = out.join("busybox-rootfs");
        make_busybox_rootfs(&rootfs)?;
        Ok(World {
            kiln,
            out,
            runs: runs.max(1),
            rootfs,
        })
    }

    fn kiln(&self, root: &Path, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            self.kiln.to_string_lossy().into_owned(),
            "--root".to_owned(),
            root.to_string_lossy().into_owned(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// A fresh store with the busybox base image imported as `base` (not timed).
    fn fresh_store(&self, name: &str) -> anyhow::Result<PathBuf> {
        let root = self.out.join("stores").join(name);
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        fs::create_dir_all(&root)?;
        let rootfs = self.rootfs.to_string_lossy().into_owned();
        measure::time(
            &self.kiln(&root, &["import", &rootfs, "base"]),
            &self.out,
            &[],
        )?;
        Ok(root)
    }

    /// Times `argv` `self.runs` times, calling `before(i)` (untimed) before each run.
    fn repeat(
        &self,
        mut before: impl FnMut(usize) -> anyhow::Result<Vec<String>>,
    ) -> Result<Vec<Sample>, String> {
        let mut samples = Vec::new();
        for i in 0..self.runs {
            let argv = before(i).map_err(|e| format!("{e:#}"))?;
            samples.push(measure::time(&argv, &self.out, &[]).map_err(|e| format!("{e:#}"))?);
        }
        Ok(samples)
    }

    fn write_dockerfile(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let dir = self.out.join("dockerfiles");
        fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        fs::write(&path, text)?;
        Ok(path)
    }
}

fn make_busybox_rootfs(root: &Path) -> anyhow::Result<()> {
    if root.join("bin/busybox").exists() {
        return Ok(());
    }
    let busybox = Path::new("/bin/busybox");
    anyhow::ensure!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    for dir in ["bin", "etc", "tmp", "root"] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::copy(busybox, root.join("bin/busybox"))?;
    let list = std::process::Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn parse(w: &World) -> Vec<Row> {
    let result = (|| -> anyhow::Result<Vec<Sample>> {
        let file = w.write_dockerfile("parse.Dockerfile", &inputs::long_dockerfile(10_000))?;
        let root = w.out.join("stores/parse");
        let file = path_str(&file);
        w.repeat(|_| Ok(w.kiln(&root, &["parse", "--json", &file])))
            .map_err(anyhow::Error::msg)
    })();
    vec![
        Row::new(
            "parse",
            "kiln parse --json (10k instructions)",
            result.map_err(|e| format!("{e:#}")),
        )
        .note("includes process start and JSON output"),
    ]
}

fn parallel(w: &World) -> Vec<Row> {
    let text = "FROM base AS a\nRUN sleep 2 && echo 1 > /f\n\
                FROM base AS b\nRUN sleep 2 && echo 2 > /f\n\
                FROM base AS c\nRUN sleep 2 && echo 3 > /f\n\
                FROM base\nCOPY --from=a /f /a\nCOPY --from=b /f /b\nCOPY --from=c /f /c\n";
    let result = (|| -> anyhow::Result<Vec<Sample>> {
        let file = path_str(&w.write_dockerfile("parallel.Dockerfile", text)?);
        let ctx = w.out.join("empty-context");
        fs::create_dir_all(&ctx)?;
        let ctx = path_str(&ctx);
        w.repeat(|_| {
            let root = w.fresh_store("parallel")?;
            Ok(w.kiln(
                &root,
                &[
                    "build",
                    &ctx,
                    "-f",
                    &file,
                    "-t",
                    "parallel",
                    "--progress=plain",
                ],
            ))
        })
        .map_err(anyhow::Error::msg)
    })();
    vec![
        Row::new(
            "parallel",
            "kiln build, cold",
            result.map_err(|e| format!("{e:#}")),
        )
        .note("ideal: 2.0 s"),
    ]
}

fn copy(w: &World) -> Vec<Row> {
    let mut rows = Vec::new();
    let ctx = w.out.join("copy-context");
    if let Err(e) = inputs::copy_context(&ctx, 10_000, 100, 200 << 20) {
        return vec![Row::new("copy", "generate inputs", Err(e.to_string()))];
    }
    let ctx_s = path_str(&ctx);
    let file = match w.write_dockerfile("copy.Dockerfile", "FROM base\nCOPY . /data\n") {
        Ok(f) => path_str(&f),
        Err(e) => return vec![Row::new("copy", "write Dockerfile", Err(e.to_string()))],
    };
    let build = |root: &Path| {
        w.kiln(
            root,
            &[
                "build",
                &ctx_s,
                "-f",
                &file,
                "-t",
                "copy",
                "--progress=plain",
            ],
        )
    };

    let cold = w.repeat(|_| Ok(build(&w.fresh_store("copy")?)));
    rows.push(Row::new("copy-cold", "kiln build, cold", cold));
    let dest = w.out.join("copy-dest");
    let cp = w.repeat(|_| {
        let _ = fs::remove_dir_all(&dest);
        Ok(vec![
            "cp".into(),
            "-a".into(),
            ctx_s.clone(),
            path_str(&dest),
        ])
    });
    rows.push(Row::new("copy-cold", "cp -a (floor)", cp));
    let tar = w.repeat(|_| {
        let _ = fs::remove_dir_all(&dest);
        fs::create_dir_all(&dest)?;
        Ok(sh(&format!(
            "tar -C '{ctx_s}' -c . | tar -C '{}' -x",
            dest.display()
        )))
    });
    rows.push(Row::new("copy-cold", "tar -c | tar -x (floor)", tar));
    let _ = fs::remove_dir_all(&dest);

    let warm = match w.fresh_store("copy-warm") {
        Ok(root) => root,
        Err(e) => {
            rows.push(Row::new("noop", "store", Err(format!("{e:#}"))));
            return rows;
        }
    };
    if let Err(e) = measure::time(&build(&warm), &w.out, &[]) {
        rows.push(Row::new("noop", "first build", Err(format!("{e:#}"))));
        return rows;
    }
    rows.push(
        Row::new(
            "noop",
            "kiln build, unchanged",
            w.repeat(|_| Ok(build(&warm))),
        )
        .note("goal: < 100 ms"),
    );
    let small = ctx.join("d000/f00000.bin");
    rows.push(Row::new(
        "one-change",
        "kiln build after rewriting one small file",
        w.repeat(|i| {
            fs::write(&small, format!("changed {i}")).context("rewrite")?;
            Ok(build(&warm))
        }),
    ));
    rows.push(
        Row::new(
            "touch",
            "kiln build after touching every file",
            w.repeat(|_| {
                touch_all(&ctx)?;
                Ok(build(&warm))
            }),
        )
        .note("must stay all-cached"),
    );
    // Leave the generated context as it was generated, for the next run of the bench.
    let _ = fs::remove_file(ctx.join(".complete"));
    rows
}

fn touch_all(dir: &Path) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            touch_all(&path)?;
        } else {
            fs::File::options()
                .write(true)
                .open(&path)?
                .set_modified(now)?;
        }
    }
    Ok(())
}

/// `kiln build --watch` kept running on the copy scenario's context (10,000 files):
/// each sample touches one file and reads the watcher's verdict line, whose time is the
/// judgement alone (the 100 ms debounce excluded); then one file is rewritten and the
/// rebuild it causes is timed from the write to its summary (debounce included).
fn watch(w: &World) -> Vec<Row> {
    use std::io::{BufRead, BufReader};
    let ctx = w.out.join("copy-context");
    if let Err(e) = inputs::copy_context(&ctx, 10_000, 100, 200 << 20) {
        return vec![Row::new("watch", "generate inputs", Err(e.to_string()))];
    }
    let file = match w.write_dockerfile("watch.Dockerfile", "FROM base\nCOPY . /data\n") {
        Ok(f) => path_str(&f),
        Err(e) => return vec![Row::new("watch", "write Dockerfile", Err(e.to_string()))],
    };
    let root = match w.fresh_store("watch") {
        Ok(root) => root,
        Err(e) => return vec![Row::new("watch", "store", Err(format!("{e:#}")))],
    };
    let argv = w.kiln(
        &root,
        &[
            "build",
            &path_str(&ctx),
            "-f",
            &file,
            "--watch",
            "--progress=plain",
        ],
    );
    let mut child = match std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return vec![Row::new("watch", "start", Err(e.to_string()))],
    };
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut until = |text: &str| -> Result<String, String> {
        for line in lines.by_ref() {
            let line = line.map_err(|e| e.to_string())?;
            if line.contains(text) {
                return Ok(line);
            }
        }
        Err(format!("kiln build --watch ended before {text:?}"))
    };
    let mut rows = Vec::new();
    let judged = (|| {
        until("watch: waiting for changes")?;
        let small = ctx.join("d000/f00000.bin");
        let mut samples = Vec::new();
        for _ in 0..w.runs.max(5) {
            fs::File::options()
                .write(true)
                .open(&small)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()))
                .map_err(|e| e.to_string())?;
            let line = until("nothing to rebuild")?;
            let ms = line
                .rsplit('(')
                .next()
                .and_then(|t| t.trim_end_matches(" ms)").parse::<f64>().ok())
                .ok_or_else(|| format!("no time in {line:?}"))?;
            samples.push(Sample {
                seconds: ms / 1e3,
                max_rss_kib: 0,
            });
        }
        Ok(samples)
    })();
    rows.push(
        Row::new(
            "watch-touch",
            "--watch: a touch judged, nothing rebuilt",
            judged,
        )
        .note("goal: < 20 ms"),
    );
    let rebuilt = (|| {
        let small = ctx.join("d000/f00000.bin");
        let mut samples = Vec::new();
        for i in 0..w.runs {
            let started = std::time::Instant::now();
            fs::write(&small, format!("watch {i}")).map_err(|e| e.to_string())?;
            until("Built ")?;
            samples.push(Sample {
                seconds: started.elapsed().as_secs_f64(),
                max_rss_kib: 0,
            });
        }
        Ok(samples)
    })();
    rows.push(Row::new(
        "watch-change",
        "--watch: one file rewritten, write to rebuilt (100 ms debounce in)",
        rebuilt,
    ));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = child.wait();
    let _ = fs::remove_file(ctx.join(".complete"));
    rows
}

fn run_100m(w: &World) -> Vec<Row> {
    let mut rows = Vec::new();
    let text = "FROM base\nRUN head -c 104857600 /dev/urandom > /big\n";
    let file = match w.write_dockerfile("run100m.Dockerfile", text) {
        Ok(f) => path_str(&f),
        Err(e) => return vec![Row::new("run-100m", "write Dockerfile", Err(e.to_string()))],
    };
    let ctx = w.out.join("empty-context");
    let _ = fs::create_dir_all(&ctx);
    let ctx = path_str(&ctx);
    rows.push(Row::new(
        "run-100m",
        "kiln build to the local store, cold",
        w.repeat(|_| {
            let root = w.fresh_store("run100m")?;
            Ok(w.kiln(
                &root,
                &["build", &ctx, "-f", &file, "-t", "big", "--progress=plain"],
            ))
        }),
    ));
    let oci = w.out.join("run100m-oci.tar");
    let oci_dest = format!("type=oci,dest={}", oci.display());
    let root = w.out.join("stores/run100m");
    rows.push(Row::new(
        "run-100m",
        "export to type=oci (RUN cached)",
        w.repeat(|_| {
            Ok(w.kiln(
                &root,
                &[
                    "build",
                    &ctx,
                    "-f",
                    &file,
                    "-o",
                    &oci_dest,
                    "--progress=plain",
                ],
            ))
        }),
    ));
    let big = w.out.join("big-100m.bin");
    if let Err(e) = inputs::random_file(&big, 100 << 20, 9) {
        rows.push(Row::new("run-100m", "generate", Err(e.to_string())));
        return rows;
    }
    let big_dir = path_str(&w.out);
    rows.push(Row::new(
        "run-100m",
        "tar -c | gzip (floor)",
        w.repeat(|_| {
            Ok(sh(&format!(
                "tar -C '{big_dir}' -c big-100m.bin | gzip > /dev/null"
            )))
        }),
    ));
    rows.push(Row::new(
        "run-100m",
        "tar -c | pigz (floor)",
        w.repeat(|_| {
            Ok(sh(&format!(
                "tar -C '{big_dir}' -c big-100m.bin | pigz > /dev/null"
            )))
        }),
    ));
    let _ = fs::remove_file(&big);
    let _ = fs::remove_file(&oci);
    rows
}

fn sandbox(w: &World) -> Vec<Row> {
    let mut text = String::from("FROM base\n");
    for i in 0..50 {
        text.push_str(&format!("RUN true # {i}\n"));
    }
    let result = (|| -> anyhow::Result<Vec<Sample>> {
        let file = path_str(&w.write_dockerfile("sandbox.Dockerfile", &text)?);
        let ctx = w.out.join("empty-context");
        fs::create_dir_all(&ctx)?;
        let ctx = path_str(&ctx);
        w.repeat(|_| {
            let root = w.fresh_store("sandbox")?;
            Ok(w.kiln(
                &root,
                &[
                    "build",
                    &ctx,
                    "-f",
                    &file,
                    "-t",
                    "steps",
                    "--progress=plain",
                ],
            ))
        })
        .map_err(anyhow::Error::msg)
    })();
    let row = Row::new(
        "sandbox",
        "kiln build, 50 x RUN true, cold",
        result.map_err(|e| format!("{e:#}")),
    );
    let per_step = row
        .median()
        .map(|m| format!("{:.1} ms per step", m * 1000.0 / 50.0));
    vec![row.note(per_step.unwrap_or_default())]
}

fn push(w: &World) -> Vec<Row> {
    use kiln_testkit::registry::{REGISTRY_BIN, RegistryServer, ServerOptions};
    if !Path::new(REGISTRY_BIN).exists() {
        return vec![Row::new(
            "push",
            "registry",
            Err(format!(
                "{REGISTRY_BIN} is absent (apt-get install docker-registry)"
            )),
        )];
    }
    let root = w.out.join("stores/run100m");
    if !root.join("content/index.json").exists() {
        return vec![Row::new(
            "push",
            "image",
            Err("run the run-100m scenario first (it builds the image pushed here)".to_owned()),
        )];
    }
    let mut rows = Vec::new();
    // Cold: a fresh registry for every run, so every blob is uploaded.
    let mut servers = Vec::new();
    let cold = w.repeat(|i| {
        let server = RegistryServer::start(ServerOptions::default());
        let target = format!("{}/bench/big:{i}", server.host());
        let argv = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!(
                "'{}' --root '{}' tag big '{target}' && '{}' --root '{}' push '{target}' --compression gzip > /dev/null",
                w.kiln.display(),
                root.display(),
                w.kiln.display(),
                root.display()
            ),
        ];
        servers.push(server);
        Ok(argv)
    });
    rows.push(
        Row::new("push", "kiln push, cold (gzip)", cold)
            .note("includes the gzip of the layer on the first run"),
    );
    let server = RegistryServer::start(ServerOptions::default());
    let target = format!("{}/bench/big:warm", server.host());
    let kiln_push = |target: &str| {
        vec![
            "sh".to_owned(),
            "-c".to_owned(),
            format!(
                "'{}' --root '{}' tag big '{target}' && '{}' --root '{}' push '{target}' > /dev/null",
                w.kiln.display(),
                root.display(),
                w.kiln.display(),
                root.display()
            ),
        ]
    };
    let _ = measure::time(&kiln_push(&target), &w.out, &[]);
    rows.push(Row::new(
        "push",
        "kiln push, again (nothing to upload)",
        w.repeat(|_| Ok(kiln_push(&target))),
    ));
    let has_skopeo = std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok();
    if !has_skopeo {
        rows.push(Row::new(
            "push",
            "skopeo copy",
            Err("skopeo is absent".to_owned()),
        ));
        return rows;
    }
    let source = format!("oci:{}:big:latest", root.join("content").display());
    let mut servers = Vec::new();
    let skopeo_cold = w.repeat(|i| {
        let server = RegistryServer::start(ServerOptions::default());
        let dest = format!("docker://{}/bench/sk:{i}", server.host());
        servers.push(server);
        Ok(vec![
            "skopeo".to_owned(),
            "copy".to_owned(),
            "--dest-tls-verify=false".to_owned(),
            "--dest-compress-format=gzip".to_owned(),
            "--quiet".to_owned(),
            source.clone(),
            dest,
        ])
    });
    rows.push(Row::new("push", "skopeo copy, cold (gzip)", skopeo_cold));
    let dest = format!("docker://{}/bench/sk:warm", server.host());
    let skopeo = vec![
        "skopeo".to_owned(),
        "copy".to_owned(),
        "--dest-tls-verify=false".to_owned(),
        "--quiet".to_owned(),
        source,
        dest,
    ];
    let _ = measure::time(&skopeo, &w.out, &[]);
    rows.push(Row::new(
        "push",
        "skopeo copy, again",
        w.repeat(|_| Ok(skopeo.clone())),
    ));
    rows
}

/// A `kiln serve` on `root` at `socket`, stopped (SIGTERM, then waited for) when dropped.
struct Served(std::process::Child);

impl Served {
    fn start(w: &World, root: &Path, socket: &Path) -> anyhow::Result<Served> {
        let _ = fs::remove_file(socket);
        let argv = w.kiln(
            root,
            &["serve", "--host", &format!("unix://{}", socket.display())],
        );
        let child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("start kiln serve")?;
        let served = Served(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "kiln serve did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(served)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn serve(w: &World) -> Vec<Row> {
    let mut rows = Vec::new();
    let ctx = w.out.join("empty-context");
    let _ = fs::create_dir_all(&ctx);
    let ctx_s = path_str(&ctx);
    let socket = w.out.join("bench-kiln.sock");
    let host = format!("unix://{}", socket.display());
    // Eight distinct small Dockerfiles: nothing to share but the base.
    let mut files = Vec::new();
    for i in 0..8 {
        match w.write_dockerfile(
            &format!("serve{i}.Dockerfile"),
            &format!("FROM base\nRUN echo {i} > /n && sleep 0.2\nENV N={i}\n"),
        ) {
            Ok(f) => files.push(path_str(&f)),
            Err(e) => return vec![Row::new("serve", "write Dockerfiles", Err(e.to_string()))],
        }
    }
    let kiln = w.kiln.display().to_string();
    let eight = |root: &Path, through: Option<&str>| {
        let mut script = String::new();
        for (i, file) in files.iter().enumerate() {
            let host = through
                .map(|h| format!("--host '{h}' "))
                .unwrap_or_default();
            script.push_str(&format!(
                "'{kiln}' --root '{}' {host}build '{ctx_s}' -f '{file}' -t s{i} --progress=quiet > /dev/null & ",
                root.display()
            ));
        }
        script.push_str("wait");
        sh(&script)
    };
    rows.push(Row::new(
        "serve-8",
        "8 kiln build processes at once, cold",
        w.repeat(|_| Ok(eight(&w.fresh_store("serve8")?, None))),
    ));
    let mut server: Option<Served> = None;
    rows.push(
        Row::new(
            "serve-8",
            "8 kiln --host clients of one kiln serve, cold",
            w.repeat(|_| {
                server = None;
                let root = w.fresh_store("serve8")?;
                server = Some(Served::start(w, &root, &socket)?);
                Ok(eight(&root, Some(&host)))
            }),
        )
        .note("server start not timed"),
    );
    drop(server);

    // No-op rebuild of a 1k-file context: in process, through the socket, and with the
    // docker CLI's classic build (which uploads the whole context every time).
    let ctx1k = w.out.join("serve-1k-context");
    if let Err(e) = inputs::copy_context(&ctx1k, 1_000, 10, 0) {
        rows.push(Row::new(
            "serve-noop",
            "generate inputs",
            Err(e.to_string()),
        ));
        return rows;
    }
    let ctx1k_s = path_str(&ctx1k);
    let file = match w.write_dockerfile("serve-noop.Dockerfile", "FROM base\nCOPY . /data\n") {
        Ok(f) => path_str(&f),
        Err(e) => {
            rows.push(Row::new(
                "serve-noop",
                "write Dockerfile",
                Err(e.to_string()),
            ));
            return rows;
        }
    };
    let root = match w.fresh_store("serve-noop") {
        Ok(root) => root,
        Err(e) => {
            rows.push(Row::new("serve-noop", "store", Err(format!("{e:#}"))));
            return rows;
        }
    };
    let local = w.kiln(
        &root,
        &[
            "build",
            &ctx1k_s,
            "-f",
            &file,
            "-t",
            "noop",
            "--progress=quiet",
        ],
    );
    if let Err(e) = measure::time(&local, &w.out, &[]) {
        rows.push(Row::new("serve-noop", "first build", Err(format!("{e:#}"))));
        return rows;
    }
    rows.push(Row::new(
        "serve-noop",
        "kiln build, unchanged (in process)",
        w.repeat(|_| Ok(local.clone())),
    ));
    let served = match Served::start(w, &root, &socket) {
        Ok(s) => s,
        Err(e) => {
            rows.push(Row::new("serve-noop", "kiln serve", Err(format!("{e:#}"))));
            return rows;
        }
    };
    let remote = w.kiln(
        &root,
        &[
            "--host",
            &host,
            "build",
            &ctx1k_s,
            "-f",
            &file,
            "-t",
            "noop",
            "--progress=quiet",
        ],
    );
    rows.push(
        Row::new(
            "serve-noop",
            "kiln --host build, unchanged",
            w.repeat(|_| Ok(remote.clone())),
        )
        .note("goal: < 2x in process"),
    );
    if Path::new("/usr/bin/docker").exists() {
        // The docker CLI wants the Dockerfile inside the context.
        let _ = fs::copy(&file, ctx1k.join("Dockerfile"));
        let docker = sh(&format!(
            "DOCKER_HOST='{host}' DOCKER_BUILDKIT=0 /usr/bin/docker build -q -t noop '{ctx1k_s}' > /dev/null"
        ));
        let _ = measure::time(&docker, &w.out, &[]);
        rows.push(
            Row::new(
                "serve-noop",
                "docker build (classic API) via kiln serve, unchanged",
                w.repeat(|_| Ok(docker.clone())),
            )
            .note("uploads the 1k-file context each time"),
        );
        let _ = fs::remove_file(ctx1k.join("Dockerfile"));
    }
    drop(served);
    rows
}
