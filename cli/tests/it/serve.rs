//! `kiln serve`: the Docker Engine API on a UNIX socket, driven by raw HTTP, by the real
//! `docker` CLI (Debian's docker.io) and by docker-py, against a server each test starts
//! with its own store and socket and stops with SIGTERM.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Kiln, describe, world};

/// A `kiln serve` child process on a socket in the test's dir.
struct Served {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Served {
    fn start(k: &Kiln, extra: &[&str]) -> Served {
        Served::start_on(k, &k.root(), extra)
    }

    /// A server whose store is `root` (not the test's own).
    fn start_on(k: &Kiln, root: &Path, extra: &[&str]) -> Served {
        let socket = k.path("kiln.sock");
        let log = k.path("serve.log");
        let child = Command::new(crate::support::kiln_bin())
            .current_dir(k.dir.path())
            .env_remove("KILN_ROOT")
            .arg("--root")
            .arg(root)
            .arg("serve")
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(k.path("serve.err")).unwrap())
            .spawn()
            .expect("start kiln serve");
        let mut served = Served {
            child: Some(child),
            socket,
            log: k.path("serve.err"),
        };
        served.wait_ready();
        let _ = &served.log;
        served
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kiln serve exited with {status}: {}", self.stderr());
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kiln serve did not listen: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then the exit status (within `limit`).
    fn stop(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server runs");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kiln serve did not stop within {limit:?} of SIGTERM: {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP answer read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&body[start..(start + size).min(body.len())]);
        body = &body[(start + size + 2).min(body.len())..];
    }
}

/// Sends `head` (without the blank line) and `body` over a fresh connection, then reads
/// the whole answer (`Connection: close`).
fn http(socket: &Path, head: &str, body: &[u8]) -> Answer {
    let mut stream = UnixStream::connect(socket).expect("connect to kiln serve");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let request = format!(
        "{head}\r\nHost: kiln\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // The server may answer (4xx) before it has read everything: a failed write is fine.
    let _ = stream.write_all(request.as_bytes());
    let _ = stream.write_all(body);
    read_answer(stream)
}

fn read_answer(mut stream: UnixStream) -> Answer {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Answer { status, head, body }
}

fn get(socket: &Path, path: &str) -> Answer {
    http(socket, &format!("GET {path} HTTP/1.1"), b"")
}

/// A tar of `files` (path, contents), written with the tar crate.
fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, path, contents.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// A tar with one entry whose name is written raw (the tar crate refuses `..` and `/`).
fn tar_with_raw_name(name: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(if kind == tar::EntryType::Regular {
        4
    } else {
        0
    });
    if let Some(link) = link {
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    if kind == tar::EntryType::Regular {
        let mut block = [0u8; 512];
        block[..4].copy_from_slice(b"evil");
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn assert_message(answer: &Answer, status: u16, fragment: &str) {
    assert_eq!(answer.status, status, "{}\n{}", answer.head, answer.text());
    let message = answer.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
}

fn docker_bin() -> Option<&'static str> {
    if Path::new("/usr/bin/docker").exists() {
        Some("/usr/bin/docker")
    } else {
        eprintln!("skipped: /usr/bin/docker is absent (apt-get install docker.io)");
        None
    }
}

/// `docker ARGS` with only DOCKER_HOST pointing at the server (and a private config dir).
fn docker(served: &Served, k: &Kiln, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("/usr/bin/docker");
    cmd.args(args)
        .current_dir(k.dir.path())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", k.path("home"))
        .env("DOCKER_CONFIG", k.path("docker-config"))
        .env("DOCKER_HOST", served.docker_host());
    for (key, value) in envs {
        cmd.env(key, value);
    }
    cmd.output().expect("run docker")
}

fn docker_ok(served: &Served, k: &Kiln, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = docker(served, k, args, envs);
    assert!(
        out.status.success(),
        "docker {}\nserver: {}",
        describe(args, &out),
        served.stderr()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A store with busybox:latest, without needing root (the store operations do not).
fn store_with_busybox() -> Option<Kiln> {
    let k = Kiln::new();
    let rootfs = kiln_testkit::rootfs::busybox(&k.path("rootfs"))?;
    k.ok(&["import", rootfs.to_str().unwrap(), "busybox:latest"]);
    Some(k)
}

#[test]
fn serve_answers_ping_version_and_501_for_containers() {
    let k = Kiln::new();
    let served = Served::start(&k, &[]);
    let ping = get(&served.socket, "/_ping");
    assert_eq!(ping.status, 200, "{ping:?}");
    assert_eq!(ping.text(), "OK");
    assert_eq!(ping.header("Builder-Version").as_deref(), Some("1"));
    assert_eq!(ping.header("API-Version").as_deref(), Some("1.41"));
    let head = http(&served.socket, "HEAD /v1.41/_ping HTTP/1.1", b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Builder-Version").as_deref(), Some("1"));
    let version = get(&served.socket, "/v1.41/version").json();
    assert_eq!(version["ApiVersion"], "1.41");
    assert_eq!(version["Os"], "linux");
    let info = get(&served.socket, "/info").json();
    assert_eq!(info["Images"], 0);
    assert_message(
        &http(
            &served.socket,
            "POST /v1.41/containers/create HTTP/1.1",
            b"{}",
        ),
        501,
        "kiln builds images and does not run containers: POST /containers/create is not supported",
    );
    assert_message(&get(&served.socket, "/v1.12/version"), 400, "too old");
    // The socket is 0660.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&served.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[test]
fn serve_bad_requests_answer_4xx_and_the_server_keeps_serving() {
    let k = Kiln::new();
    let served = Served::start(&k, &["--max-context-size", "64k"]);
    let s = &served.socket;
    let post =
        |query: &str, body: &[u8]| http(s, &format!("POST /v1.41/build{query} HTTP/1.1"), body);
    let context = tar_of(&[("Dockerfile", "FROM scratch\n")]);
    // Unknown parameters and values kiln cannot honour.
    assert_message(
        &post("?frobnicate=1", &context),
        400,
        "unknown parameter \"frobnicate\"",
    );
    assert_message(&post("?memory=1000000", &context), 400, "resource limits");
    assert_message(&post("?buildargs=notjson", &context), 400, "buildargs");
    assert_message(
        &post("?dockerfile=../Dockerfile", &context),
        400,
        "inside the context",
    );
    assert_message(&post("?version=2", &context), 400, "DOCKER_BUILDKIT");
    // A body that is neither a tar nor a Dockerfile (as dockerd, a lone Dockerfile is a
    // context), and a tar cut short inside an entry.
    assert_message(&post("?t=x", &[0xffu8; 2048]), 400, "the build context");
    let mut truncated = tar_of(&[
        ("Dockerfile", "FROM scratch\n"),
        ("big", &"y".repeat(10_000)),
    ]);
    truncated.truncate(512 * 3 + 1000);
    assert_message(&post("", &truncated), 400, "the build context");
    // Paths escaping the context.
    assert_message(
        &post(
            "",
            &tar_with_raw_name("../evil", tar::EntryType::Regular, None),
        ),
        400,
        "the build context",
    );
    assert_message(
        &post(
            "",
            &tar_with_raw_name("/etc/evil", tar::EntryType::Regular, None),
        ),
        400,
        "the build context",
    );
    let mut link_then_write = tar_with_raw_name("out", tar::EntryType::Symlink, Some("/tmp"));
    link_then_write.truncate(512);
    link_then_write.extend(tar_with_raw_name("out/evil", tar::EntryType::Regular, None));
    assert_message(&post("", &link_then_write), 400, "the build context");
    assert!(!Path::new("/tmp/evil").exists());
    // A truncated upload: Content-Length promises more than comes.
    {
        let mut stream = UnixStream::connect(s).unwrap();
        stream
            .write_all(
                b"POST /build HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\nContent-Length: 50000\r\n\r\n",
            )
            .unwrap();
        stream.write_all(&context[..600]).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let answer = read_answer(stream);
        assert_eq!(answer.status, 400, "{}", answer.text());
    }
    // Bigger than --max-context-size: by its Content-Length, and streamed in chunks.
    let big = tar_of(&[
        ("Dockerfile", "FROM scratch\n"),
        ("blob", &"x".repeat(100_000)),
    ]);
    assert_message(&post("", &big), 413, "larger than the server's limit");
    {
        let mut stream = UnixStream::connect(s).unwrap();
        stream
            .write_all(b"POST /build HTTP/1.1\r\nHost: kiln\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for chunk in big.chunks(8192) {
            let _ = write!(stream, "{:x}\r\n", chunk.len());
            let _ = stream.write_all(chunk);
            let _ = stream.write_all(b"\r\n");
        }
        let _ = stream.write_all(b"0\r\n\r\n");
        let answer = read_answer(stream);
        assert_message(&answer, 413, "larger than the server's limit");
    }
    // A huge request head.
    let huge = format!("GET /_ping HTTP/1.1\r\nX-Junk: {}", "a".repeat(400_000));
    let answer = http(s, &huge, b"");
    assert_eq!(answer.status, 431, "{}", answer.head);
    // Other endpoints' parameters.
    assert_message(&get(s, "/images/json?bogus=1"), 400, "unknown parameter");
    assert_message(&get(s, "/images/nothing:here/json"), 404, "nothing:here");
    // Still serving, and nothing left behind in the store's temp dir.
    assert_eq!(get(s, "/_ping").status, 200);
    let leftovers: Vec<_> = std::fs::read_dir(k.root().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "left in tmp: {leftovers:?}");
}

#[test]
fn serve_stops_on_sigterm_and_replaces_a_stale_socket() {
    let k = Kiln::new();
    // A socket left by a server that was killed: nobody listens on it.
    let stale = std::os::unix::net::UnixListener::bind(k.path("kiln.sock")).unwrap();
    drop(stale);
    assert!(k.path("kiln.sock").exists());
    let mut served = Served::start(&k, &[]);
    assert_eq!(get(&served.socket, "/_ping").status, 200);
    // A second server on the same socket is refused while the first answers.
    let second = k
        .cmd()
        .args(["serve", "--host"])
        .arg(served.docker_host())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another server is listening"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(get(&served.socket, "/_ping").status, 200);
    let _ = served.pid();
    let status = served.stop(Duration::from_secs(20));
    assert!(status.success(), "{status}: {}", served.stderr());
    assert!(!served.socket.exists(), "the socket is removed on exit");
}

#[test]
fn serve_refuses_an_open_tcp_port_without_mutual_tls() {
    let k = Kiln::new();
    let err = k.fails(&["serve", "--host", "tcp://0.0.0.0:23750"]);
    assert!(err.contains("--tlscert, --tlskey and --tlscacert"), "{err}");
    let err = k.fails(&[
        "serve",
        "--host",
        "tcp://0.0.0.0:23750",
        "--tlscert",
        "c.pem",
        "--tlskey",
        "k.pem",
    ]);
    assert!(err.contains("all three"), "{err}");
}

#[test]
fn serve_docker_cli_lists_tags_inspects_removes_and_saves() {
    let Some(_) = docker_bin() else { return };
    let Some(k) = store_with_busybox() else {
        return;
    };
    let served = Served::start(&k, &[]);
    let images = docker_ok(&served, &k, &["images"], &[]);
    assert!(images.contains("busybox"), "{images}");
    docker_ok(&served, &k, &["tag", "busybox", "team/box:1"], &[]);
    let listed = docker_ok(
        &served,
        &k,
        &["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"],
        &[],
    );
    assert!(listed.contains("team/box:1"), "{listed}");
    let inspect = docker_ok(&served, &k, &["image", "inspect", "team/box:1"], &[]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect[0]["Os"], "linux");
    assert_eq!(inspect[0]["RootFS"]["Type"], "layers");
    let removed = docker_ok(&served, &k, &["rmi", "team/box:1"], &[]);
    assert!(removed.contains("Untagged: team/box:1"), "{removed}");
    let missing = docker(&served, &k, &["rmi", "team/box:1"], &[]);
    assert!(!missing.status.success());
    // docker save: a docker-archive that names the image.
    let archive = k.path("busybox.tar");
    docker_ok(
        &served,
        &k,
        &["save", "-o", archive.to_str().unwrap(), "busybox"],
        &[],
    );
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    for entry in tar.entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    assert!(names.contains(&"manifest.json".to_owned()), "{names:?}");
    // docker load of that archive gives back the same image id.
    let id = docker_ok(&served, &k, &["images", "-q", "--no-trunc", "busybox"], &[]);
    docker_ok(&served, &k, &["rmi", "busybox"], &[]);
    let loaded = docker_ok(&served, &k, &["load", "-i", archive.to_str().unwrap()], &[]);
    assert!(loaded.contains("Loaded image: busybox"), "{loaded}");
    let again = docker_ok(&served, &k, &["images", "-q", "--no-trunc", "busybox"], &[]);
    assert_eq!(again.trim(), id.trim());
    assert!(id.trim().starts_with("sha256:"), "{id}");
    // A damaged archive is a 400, and the store keeps what it had.
    let answer = http(
        &served.socket,
        "POST /images/load HTTP/1.1",
        &tar_of(&[(
            "manifest.json",
            "[{\"Config\":\"none.json\",\"Layers\":[]}]",
        )]),
    );
    assert_message(&answer, 400, "none.json");
}

#[test]
fn serve_docker_push_reaches_a_real_registry() {
    let Some(_) = docker_bin() else { return };
    if !kiln_testkit::registry::tools_present() {
        return;
    }
    let Some(k) = store_with_busybox() else {
        return;
    };
    let registry = kiln_testkit::registry::RegistryServer::start(Default::default());
    let served = Served::start(&k, &[]);
    let target = format!("{}/served/busybox:1", registry.host());
    docker_ok(&served, &k, &["tag", "busybox", &target], &[]);
    let pushed = docker_ok(&served, &k, &["push", &target], &[]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{target}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_docker_cli_builds_with_the_classic_api() {
    let Some(_) = docker_bin() else { return };
    let Some(k) = world() else { return };
    let served = Served::start(&k, &[]);
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt > /copy.txt\nLABEL served=yes\n",
    );
    k.write("ctx/hello.txt", "hello from the context\n");
    for buildkit in [None, Some("0")] {
        let envs: Vec<(&str, &str)> = buildkit
            .map(|v| ("DOCKER_BUILDKIT", v))
            .into_iter()
            .collect();
        let out = docker(&served, &k, &["build", "-t", "served:1", "ctx"], &envs);
        assert!(
            out.status.success(),
            "docker build ({buildkit:?}): {}\nserver: {}",
            describe(&["build"], &out),
            served.stderr()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Successfully built"), "{text}");
        assert!(text.contains("Successfully tagged served:1"), "{text}");
    }
    let inspect = docker_ok(&served, &k, &["image", "inspect", "served:1"], &[]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect[0]["Config"]["Labels"]["served"], "yes");
    // The same image as a local build of the same context.
    let local = k.ok(&[
        "build",
        "-q",
        "-t",
        "local:1",
        k.path("ctx").to_str().unwrap(),
    ]);
    assert_eq!(inspect[0]["Id"].as_str().unwrap(), local.trim());
    // A failing step: the CLI fails with the step's message.
    k.write(
        "bad/Dockerfile",
        "FROM busybox\nRUN echo no-such-luck && exit 3\n",
    );
    let out = docker(&served, &k, &["build", "bad"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exit") || err.contains("3"), "{err}");
}

#[test]
fn serve_docker_py_builds_and_streams_its_log() {
    let python = Path::new("/tmp/serve-venv/bin/python3");
    let python = std::env::var_os("KILN_TEST_DOCKER_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| python.to_owned());
    let probe = Command::new(&python).args(["-c", "import docker"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "skipped: docker-py is not importable by {} (python3 -m venv DIR && DIR/bin/pip install docker; KILN_TEST_DOCKER_PY=DIR/bin/python3)",
            python.display()
        );
        return;
    }
    let Some(k) = world() else { return };
    let served = Served::start(&k, &[]);
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN echo built-by-docker-py\n",
    );
    let script = r#"
import sys, docker
client = docker.DockerClient(base_url=sys.argv[1])
image, logs = client.images.build(path=sys.argv[2], tag="py:1")
lines = [l.get("stream", "") for l in logs]
assert any("built-by-docker-py" in l for l in lines), lines
assert "py:1" in image.tags, image.tags
print(image.id)
"#;
    let out = Command::new(&python)
        .args([
            "-c",
            script,
            &served.docker_host(),
            k.path("ctx").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker-py: {}\n{}\nserver: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        served.stderr()
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sha256:"));
}

/// A real dockerd with its own data root, exec root and socket, stopped on drop; None
/// (with the reason printed) where one cannot run.
struct Dockerd {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Dockerd {
    fn start(dir: &Path) -> Option<Dockerd> {
        if !Path::new("/usr/sbin/dockerd").exists() {
            eprintln!("skipped: /usr/sbin/dockerd is absent (apt-get install docker.io)");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("d.sock");
        let child = Command::new("/usr/sbin/dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("d.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("dockerd.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("dockerd.err")).unwrap())
            .spawn()
            .ok()?;
        let mut dockerd = Dockerd {
            child,
            socket,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = dockerd.child.try_wait() {
                eprintln!(
                    "skipped: dockerd cannot run here ({status}): {}",
                    dockerd.log()
                );
                return None;
            }
            if UnixStream::connect(&dockerd.socket).is_ok()
                && get(&dockerd.socket, "/_ping").status == 200
            {
                return Some(dockerd);
            }
            if Instant::now() > deadline {
                eprintln!("skipped: dockerd did not start in 60s: {}", dockerd.log());
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.err")).unwrap_or_default()
    }

    fn docker(&self, home: &Path, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", home)
            .env("DOCKER_CONFIG", home.join("docker-config"))
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .output()
            .expect("run docker")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_docker_save_loads_and_runs_in_a_real_dockerd() {
    let Some(_) = docker_bin() else { return };
    let Some(k) = world() else { return };
    let served = Served::start(&k, &[]);
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN echo made-by-kiln-serve > /made\nCMD [\"cat\", \"/made\"]\n",
    );
    docker_ok(&served, &k, &["build", "-t", "saved:1", "ctx"], &[]);
    let archive = k.path("saved.tar");
    docker_ok(
        &served,
        &k,
        &["save", "-o", archive.to_str().unwrap(), "saved:1"],
        &[],
    );
    let Some(dockerd) = Dockerd::start(&k.path("dockerd")) else {
        return;
    };
    let home = k.path("home");
    let loaded = dockerd.docker(&home, &["load", "-i", archive.to_str().unwrap()]);
    assert!(
        loaded.status.success(),
        "docker load: {}\n{}",
        describe(&["load"], &loaded),
        dockerd.log()
    );
    assert!(String::from_utf8_lossy(&loaded.stdout).contains("saved:1"));
    let ran = dockerd.docker(&home, &["run", "--rm", "--network", "none", "saved:1"]);
    assert!(
        ran.status.success(),
        "docker run: {}\n{}",
        describe(&["run"], &ran),
        dockerd.log()
    );
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        "made-by-kiln-serve"
    );
}

#[test]
fn serve_tcp_with_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    if !Path::new("/usr/bin/openssl").exists() || !Path::new("/usr/bin/curl").exists() {
        eprintln!("skipped: openssl and curl are needed");
        return;
    }
    let k = Kiln::new();
    let dir = k.path("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let tls = kiln_testkit::registry::make_tls(&dir);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=client",
    ]);
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.crt",
        "-days",
        "2",
        "-extfile",
        "client.cnf",
    ]);
    let port = kiln_testkit::registry::free_port();
    let mut child = k
        .cmd()
        .arg("serve")
        .arg("--host")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .arg("--tlscert")
        .arg(&tls.server_cert)
        .arg("--tlskey")
        .arg(&tls.server_key)
        .arg("--tlscacert")
        .arg(&tls.ca_cert)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(k.path("serve.err")).unwrap())
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/_ping");
    let curl = |with_cert: bool| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&tls.ca_cert);
        if with_cert {
            cmd.arg("--cert")
                .arg(dir.join("client.crt"))
                .arg("--key")
                .arg(dir.join("client.key"));
        }
        cmd.arg(&url).output().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "kiln serve did not listen");
        assert!(
            child.try_wait().unwrap().is_none(),
            "kiln serve exited: {}",
            std::fs::read_to_string(k.path("serve.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let admitted = curl(true);
    let refused = curl(false);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&admitted.stdout),
        "OK",
        "{}",
        String::from_utf8_lossy(&admitted.stderr)
    );
    assert!(
        !refused.status.success(),
        "a client without a certificate got in"
    );
    assert!(status.success(), "{status}");
}

/// Whether a process whose command line is exactly `line` runs on this machine.
fn process_running(line: &str) -> bool {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim() == line)
            })
        })
        .unwrap_or(false)
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&root))
        .map(str::to_owned)
        .collect()
}

fn spawn_docker(served: &Served, k: &Kiln, args: &[&str]) -> Child {
    Command::new("/usr/bin/docker")
        .args(args)
        .current_dir(k.dir.path())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", k.path("home"))
        .env("DOCKER_CONFIG", k.path("docker-config"))
        .env("DOCKER_HOST", served.docker_host())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run docker")
}

#[test]
fn serve_client_that_goes_away_cancels_its_build() {
    let Some(_) = docker_bin() else { return };
    let Some(k) = world() else { return };
    let served = Served::start(&k, &[]);
    k.write("ctx/Dockerfile", "FROM busybox\nRUN sleep 3131\n");
    let mut client = spawn_docker(&served, &k, &["build", "ctx"]);
    assert!(
        wait_until(Duration::from_secs(60), || process_running("sleep 3131")),
        "the RUN step never started: {}",
        served.stderr()
    );
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !process_running("sleep 3131")),
        "the RUN step outlived its client"
    );
    assert!(
        wait_until(Duration::from_secs(5), || mounts_under(&k.root())
            .is_empty()),
        "mounts left: {:?}",
        mounts_under(&k.root())
    );
    // The server goes on, and the store is intact.
    k.write("ok/Dockerfile", "FROM busybox\nRUN echo fine\n");
    docker_ok(&served, &k, &["build", "-t", "after:1", "ok"], &[]);
    assert_eq!(get(&served.socket, "/_ping").status, 200);
}

#[test]
fn serve_sigterm_cancels_builds_at_the_shutdown_timeout() {
    let Some(_) = docker_bin() else { return };
    let Some(k) = world() else { return };
    let mut served = Served::start(&k, &["--shutdown-timeout", "1"]);
    k.write("ctx/Dockerfile", "FROM busybox\nRUN sleep 3132\n");
    let mut client = spawn_docker(&served, &k, &["build", "-t", "never:1", "ctx"]);
    assert!(
        wait_until(Duration::from_secs(60), || process_running("sleep 3132")),
        "the RUN step never started: {}",
        served.stderr()
    );
    let status = served.stop(Duration::from_secs(40));
    assert!(status.success(), "{status}: {}", served.stderr());
    assert!(
        served.stderr().contains("cancelled 1 build"),
        "{}",
        served.stderr()
    );
    assert!(
        !process_running("sleep 3132"),
        "the RUN step outlived the server"
    );
    assert!(
        mounts_under(&k.root()).is_empty(),
        "{:?}",
        mounts_under(&k.root())
    );
    assert!(!served.socket.exists());
    let out = client.wait().unwrap();
    assert!(!out.success(), "the cancelled build reported success");
    // Nothing was tagged.
    let images = k.ok(&["images"]);
    assert!(!images.contains("never"), "{images}");
}

#[test]
fn serve_docker_push_uses_the_clients_login() {
    let Some(_) = docker_bin() else { return };
    if !kiln_testkit::registry::tools_present() {
        return;
    }
    let Some(k) = store_with_busybox() else {
        return;
    };
    let registry =
        kiln_testkit::registry::RegistryServer::start(kiln_testkit::registry::ServerOptions {
            htpasswd: Some(("kilnuser", "s3cret")),
            ..Default::default()
        });
    let served = Served::start(&k, &[]);
    let target = format!("{}/private/busybox:1", registry.host());
    docker_ok(&served, &k, &["tag", "busybox", &target], &[]);
    // No login on the client: the registry refuses.
    let anonymous = docker(&served, &k, &["push", &target], &[]);
    assert!(
        !anonymous.status.success(),
        "an anonymous push got in: {}",
        describe(&["push"], &anonymous)
    );
    // The client's login (its config.json) travels in X-Registry-Auth; the server's own
    // docker config has none.
    k.write(
        "docker-config/config.json",
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"a2lsbnVzZXI6czNjcmV0\"}}}}}}",
            registry.host()
        ),
    );
    let pushed = docker_ok(&served, &k, &["push", &target], &[]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
}

/// `kiln --host SERVER ARGS` in the test's dir, with `envs`.
fn kiln_remote(served: &Served, k: &Kiln, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = k.cmd();
    cmd.arg("--host").arg(served.docker_host()).args(args);
    for (key, value) in envs {
        cmd.env(key, value);
    }
    crate::support::run(&mut cmd)
}

/// The world's store copied (busybox only, no cache), for a server that must build
/// from nothing what the test's own store builds.
fn copy_of_store(k: &Kiln) -> PathBuf {
    let copy = k.path("served-root");
    let status = Command::new("cp")
        .arg("-a")
        .arg(k.root())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

fn blobs_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn kiln_host_build_gives_the_local_image_id_with_secrets_and_dockerignore() {
    let Some(k) = world() else { return };
    let served_root = copy_of_store(&k);
    let served = Served::start_on(&k, &served_root, &[]);
    // The steps check the secret by its hash: the Dockerfile (copied into the image and
    // its history) must not hold the value the store is searched for.
    let hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(b"s3cr3t-v4lue"))
    };
    k.write(
        "ctx/Dockerfile",
        format!(
            "FROM busybox\nCOPY . /app\n\
             RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | grep -q ^{hash}\n\
             RUN --mount=type=secret,id=tok,env=TOK echo -n \"$TOK\" | sha256sum | grep -q ^{hash}\n"
        ),
    );
    k.write("ctx/a.txt", "a\n");
    k.write("ctx/sub/deep/b.txt", "b\n");
    k.write("ctx/junk.log", "junk\n");
    k.write("ctx/keep.log", "keep\n");
    k.write("ctx/private.key", "not for the server\n");
    k.write("ctx/.dockerignore", "*.log\n!keep.log\nprivate.key\n");
    std::os::unix::fs::symlink("a.txt", k.path("ctx/link")).unwrap();
    let tool = k.write("ctx/tool.sh", "#!/bin/sh\n");
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    k.write("tok.txt", "s3cr3t-v4lue");
    let args = [
        "build",
        "ctx",
        "-t",
        "app:1",
        "--progress",
        "plain",
        "--secret",
        "id=tok,src=tok.txt",
    ];
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let mut local = k.cmd();
    local.args(args).envs(epoch);
    let local = crate::support::run(&mut local);
    assert!(local.status.success(), "{}", describe(&args, &local));
    let remote = kiln_remote(&served, &k, &args, &epoch);
    assert!(
        remote.status.success(),
        "{}\nserver: {}",
        describe(&args, &remote),
        served.stderr()
    );
    let local_id = String::from_utf8_lossy(&local.stdout).trim().to_owned();
    let remote_id = String::from_utf8_lossy(&remote.stdout).trim().to_owned();
    assert!(local_id.starts_with("sha256:"), "{local_id}");
    assert_eq!(local_id, remote_id, "the server built another image");
    // The same progress views: plain lines for every step, then the summary.
    let shown = String::from_utf8_lossy(&remote.stderr);
    for fragment in [
        "[1/4] FROM busybox",
        "RUN --mount=type=secret",
        "DONE",
        "Built sha256:",
        "Tagged app:1",
    ] {
        assert!(
            shown.contains(fragment),
            "{fragment:?} missing from\n{shown}"
        );
    }
    // Equal ids mean equal layers: the server's image is this one, .dockerignore applied
    // on the client and nothing more.
    let tree = crate::support::image_tree(&k, "app:1");
    for present in [
        "app/a.txt",
        "app/sub/deep/b.txt",
        "app/keep.log",
        "app/link",
        "app/tool.sh",
    ] {
        assert!(
            std::fs::symlink_metadata(tree.path().join(present)).is_ok(),
            "{present} missing"
        );
    }
    for absent in ["app/junk.log", "app/private.key"] {
        assert!(
            !tree.path().join(absent).exists(),
            "{absent} reached the image"
        );
    }
    // The secret reached the RUN steps (they test it) and no file of the server's store.
    let leaked = blobs_containing(&served_root, b"s3cr3t-v4lue");
    assert!(
        leaked.is_empty(),
        "the secret is on the server's disk: {leaked:?}"
    );
    // The server tagged it in its own store.
    let listed = Command::new(crate::support::kiln_bin())
        .arg("--root")
        .arg(&served_root)
        .arg("images")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("app"),
        "{listed:?}"
    );
}

#[test]
fn kiln_host_streams_a_file_output_and_refuses_what_it_cannot_carry() {
    let Some(k) = world() else { return };
    let served = Served::start(&k, &[]);
    k.write("ctx/Dockerfile", "FROM busybox\nCOPY hello /hello\n");
    k.write("ctx/hello", "hello from the context\n");
    let out = kiln_remote(
        &served,
        &k,
        &[
            "build",
            "ctx",
            "-o",
            "type=tar,dest=fs.tar",
            "--progress",
            "quiet",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    let mut archive = tar::Archive::new(std::fs::File::open(k.path("fs.tar")).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.trim_start_matches("./") == "hello"),
        "{names:?}"
    );
    // type=local: the server streams the filesystem, this side writes the directory
    // with local export's rules.
    let out = kiln_remote(
        &served,
        &k,
        &[
            "build",
            "ctx",
            "-o",
            "type=local,dest=tree",
            "--progress",
            "plain",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", describe(&["build"], &out));
    assert_eq!(
        std::fs::read_to_string(k.path("tree/hello")).unwrap(),
        "hello from the context\n"
    );
    let shown = String::from_utf8_lossy(&out.stderr);
    assert!(shown.contains("Wrote the filesystem to tree"), "{shown}");
    assert!(!shown.contains("as a tar to -"), "{shown}");
    let refusals: [(&[&str], &str); 6] = [
        (
            &["build", "ctx", "-o", "type=local,dest=tree"],
            "it is not empty",
        ),
        (
            &["build", "ctx", "--cache-to", "type=local,dest=c"],
            "through --host",
        ),
        (
            &["build", "ctx", "--ssh", "default"],
            "--ssh through --host",
        ),
        (&["build", "-", "-t", "x"], "must be a directory"),
        (
            &["build", "ctx", "--build-context", "x=ctx"],
            "docker-image://",
        ),
        (&["images"], "only `kiln build`"),
    ];
    for (args, fragment) in refusals {
        let out = kiln_remote(&served, &k, args, &[]);
        assert!(!out.status.success(), "{}", describe(args, &out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(fragment),
            "{args:?}: {fragment:?} missing from {err}"
        );
    }
    // --check builds nothing: it runs here, even with --host (a lint finding shows).
    k.write("lint/Dockerfile", "FROM busybox AS Build\n");
    let out = kiln_remote(&served, &k, &["build", "lint", "--check"], &[]);
    assert!(out.status.success(), "{}", describe(&["--check"], &out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("StageNameCasing"),
        "{}",
        describe(&["--check"], &out)
    );
    // Nothing at the host: a clear message.
    let mut cmd = k.cmd();
    cmd.args(["--host", "unix:///nonexistent/kiln.sock", "build", "ctx"]);
    let out = crate::support::run(&mut cmd);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is `kiln serve` running there?"),
        "{}",
        describe(&["--host"], &out)
    );
}

#[test]
fn kiln_api_bad_requests_answer_4xx_and_the_server_keeps_serving() {
    let k = Kiln::new();
    let served = Served::start(&k, &[]);
    let post = |body: &[u8]| {
        http(
            &served.socket,
            "POST /kiln/v1/build HTTP/1.1\r\nContent-Type: application/x-kiln-build",
            body,
        )
    };
    let tar = tar_of(&[("Dockerfile", "FROM scratch\n")]);
    let with_spec = |spec: &str| {
        let mut body = spec.as_bytes().to_vec();
        body.push(b'\n');
        body.extend_from_slice(&tar);
        body
    };
    assert_message(&post(b"no newline and no json"), 400, "the build spec");
    assert_message(
        &post(&with_spec("{not json")),
        400,
        "the build spec is not valid",
    );
    assert_message(&post(&with_spec("{\"tagz\": []}")), 400, "unknown field");
    assert_message(
        &post(&with_spec("{\"outputs\": [\"type=tar,dest=/etc/x\"]}")),
        400,
        "would write on the server",
    );
    assert_message(
        &post(&with_spec("{\"outputs\": [\"type=local,dest=-\"]}")),
        400,
        "",
    );
    assert_message(
        &post(&with_spec("{\"allow\": [\"network.host\"]}")),
        403,
        "--allow-insecure-entitlement network.host",
    );
    assert_message(
        &post(&with_spec(
            "{\"outputs\": [\"type=tar,dest=-\", \"type=oci,dest=-\"]}",
        )),
        400,
        "only one output can go to dest=-",
    );
    assert_message(
        &post(&with_spec(
            "{\"secrets\": [{\"id\": \"a\", \"value\": \"***\"}]}",
        )),
        400,
        "not base64",
    );
    assert_message(
        &post(&with_spec("{\"named_contexts\": {\"x\": \"/etc\"}}")),
        400,
        "only docker-image://",
    );
    let mut escaping = b"{}\n".to_vec();
    escaping.extend_from_slice(&tar_with_raw_name("../evil", tar::EntryType::Regular, None));
    assert_message(&post(&escaping), 400, "not a usable tar");
    let mut truncated = with_spec("{}");
    truncated.truncate(truncated.len() - 1500);
    let answer = post(&truncated);
    assert!((400..500).contains(&answer.status), "{answer:?}");
    assert_eq!(get(&served.socket, "/_ping").status, 200);
}

#[test]
fn kiln_host_two_clients_share_each_run_and_a_killed_client_stops_its_step() {
    let Some(k) = world() else { return };
    let served = Served::start(&k, &[]);
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,id=counter,target=/count \
         echo ran >> /count/runs && sleep 2 && echo done > /out\n",
    );
    let spawn = |tag: &str| {
        k.cmd()
            .arg("--host")
            .arg(served.docker_host())
            .args(["build", "ctx", "-t", tag, "--progress", "quiet"])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn("one:1"), spawn("two:1"));
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert!(first.status.success(), "{}", describe(&["one"], &first));
    assert!(second.status.success(), "{}", describe(&["two"], &second));
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&second.stdout),
        "both clients get the same image id"
    );
    let runs = blobs_containing(&k.root().join("cache-mounts"), b"ran\n");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let count = std::fs::read_to_string(&runs[0]).unwrap();
    assert_eq!(count, "ran\n", "the RUN ran more than once");

    // A client killed mid-RUN: its step is gone within a second, the store is intact.
    k.write("slow/Dockerfile", "FROM busybox\nRUN sleep 3133\n");
    let mut client = k
        .cmd()
        .arg("--host")
        .arg(served.docker_host())
        .args(["build", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || process_running("sleep 3133")),
        "the RUN step never started: {}",
        served.stderr()
    );
    client.kill().unwrap();
    client.wait().unwrap();
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(1), || !process_running("sleep 3133")),
        "the RUN step outlived its client by more than a second"
    );
    eprintln!("the step was gone {:?} after the client", killed.elapsed());
    assert!(
        wait_until(Duration::from_secs(5), || mounts_under(&k.root())
            .is_empty()),
        "{:?}",
        mounts_under(&k.root())
    );
    k.ok(&["fsck"]);
    let after = kiln_remote(&served, &k, &["build", "ctx", "-t", "three:1"], &[]);
    assert!(after.status.success(), "{}", describe(&["three"], &after));
}

/// The only directory under the store's kept contexts.
fn kept_context(root: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(root.join("contexts"))
        .expect("the server kept the context")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

#[test]
fn kiln_host_rebuilds_from_a_kept_context_and_sees_every_change() {
    use std::os::unix::fs::MetadataExt;
    let Some(k) = world() else { return };
    let served = Served::start(&k, &[]);
    k.write(
        "ctx/Dockerfile",
        "FROM busybox\nCOPY . /app\nRUN cat /app/a.txt /app/b.txt > /both; ls /app > /listing\n",
    );
    k.write("ctx/a.txt", "aaaa\n");
    k.write("ctx/b.txt", "bbbb\n");
    k.write("ctx/gone.txt", "soon gone\n");
    let build = |tag: &str| {
        let out = kiln_remote(
            &served,
            &k,
            &["build", "ctx", "-t", tag, "--progress", "plain"],
            &[],
        );
        assert!(
            out.status.success(),
            "{}\n{}",
            describe(&[tag], &out),
            served.stderr()
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    build("v:1");
    let kept = kept_context(&k.root());
    // Root's alone: a context may hold setuid files and device nodes.
    let mode = std::fs::metadata(k.root().join("contexts")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700, "contexts/ is {mode:o}");
    let a_inode = std::fs::metadata(kept.join("a.txt")).unwrap().ino();
    // An unchanged rebuild is all cached and rewrites nothing.
    let again = build("v:2");
    assert!(again.contains("0 steps run"), "{again}");
    assert_eq!(
        std::fs::metadata(kept.join("a.txt")).unwrap().ino(),
        a_inode
    );
    // b changes in content only (same size, same second), gone.txt goes, new.txt comes.
    let b = k.path("ctx/b.txt");
    let mtime = std::fs::metadata(&b).unwrap().modified().unwrap();
    std::fs::write(&b, "BBBB\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::remove_file(k.path("ctx/gone.txt")).unwrap();
    k.write("ctx/new.txt", "new\n");
    let changed = build("v:3");
    assert!(changed.contains("2 steps run"), "{changed}");
    let tree = crate::support::image_tree(&k, "v:3");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("both")).unwrap(),
        "aaaa\nBBBB\n"
    );
    assert_eq!(
        std::fs::read_to_string(tree.path().join("listing")).unwrap(),
        "Dockerfile\na.txt\nb.txt\nnew.txt\n"
    );
    assert_eq!(kept_context(&k.root()), kept);
    assert!(!kept.join("gone.txt").exists());
    // prune --all (no build running) removes the kept context.
    k.ok(&["prune", "--all"]);
    assert!(!kept.exists());
}

#[test]
fn kiln_host_gets_network_host_only_from_a_server_that_grants_it() {
    let Some(k) = world() else { return };
    let refused = k.fails(&["serve", "--allow-insecure-entitlement", "security.insecure"]);
    assert!(refused.contains("grants only network.host"), "{refused}");
    let served = Served::start(&k, &["--allow-insecure-entitlement", "network.host"]);
    k.write("ctx/Dockerfile", "FROM busybox\nRUN --network=host true\n");
    let out = kiln_remote(
        &served,
        &k,
        &[
            "build",
            "ctx",
            "--allow",
            "network.host",
            "--progress",
            "quiet",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(&["build"], &out),
        served.stderr()
    );
}
