//! `kiln login` / `kiln logout` against a real `docker-registry` with htpasswd auth.

use std::io::Write;
use std::process::Stdio;

use kiln_testkit::registry::{REGISTRY_BIN, RegistryServer, ServerOptions};

use crate::support::{Kiln, describe};

fn login(k: &Kiln, host: &str, user: &str, password: &str) -> std::process::Output {
    let mut child = k
        .cmd()
        .env("DOCKER_CONFIG", k.path("docker"))
        .args(["login", host, "-u", user, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln login");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    child.wait_with_output().expect("kiln login")
}

#[test]
fn login_checks_the_password_and_logout_forgets_it() {
    if !std::path::Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipped: {REGISTRY_BIN} is absent (apt-get install docker-registry)");
        return;
    }
    let server = RegistryServer::start(ServerOptions {
        htpasswd: Some(("kiln", "s3cret")),
        ..ServerOptions::default()
    });
    let host = server.host();
    let k = Kiln::new();
    let config = k.path("docker/config.json");

    let wrong = login(&k, &host, "kiln", "nope");
    assert!(!wrong.status.success(), "{}", describe(&["login"], &wrong));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains(&format!(
            "{host}: unauthorized: check the user name and password (kiln login {host})"
        )),
        "{stderr}"
    );
    assert!(!config.exists(), "a refused login must write nothing");

    let right = login(&k, &host, "kiln", "s3cret");
    assert!(right.status.success(), "{}", describe(&["login"], &right));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("config.json"))
            .expect("config.json is JSON");
    assert!(saved["auths"][&host]["auth"].is_string(), "{saved}");

    let out = k
        .cmd()
        .env("DOCKER_CONFIG", k.path("docker"))
        .args(["logout", &host])
        .output()
        .expect("kiln logout");
    assert!(out.status.success(), "{}", describe(&["logout"], &out));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("config.json"))
            .expect("config.json is JSON");
    assert!(saved["auths"].get(&host).is_none(), "{saved}");
}

#[test]
fn login_without_a_password_is_a_usage_error() {
    let k = Kiln::new();
    let err = k.fails(&["login", "127.0.0.1:1", "-u", "x"]);
    assert!(err.contains("--password-stdin"), "{err}");
}

#[test]
fn push_is_read_by_skopeo_a_second_push_uploads_nothing_and_pull_brings_it_back() {
    if !std::path::Path::new(REGISTRY_BIN).exists() {
        eprintln!("skipped: {REGISTRY_BIN} is absent (apt-get install docker-registry)");
        return;
    }
    let server = RegistryServer::start(ServerOptions::default());
    let host = server.host();
    let k = Kiln::new();
    let src = k.path("src");
    std::fs::create_dir_all(src.join("etc")).expect("mkdir");
    std::fs::write(src.join("etc/motd"), "pushed by kiln\n").expect("write");
    k.ok(&[
        "import",
        src.to_str().expect("utf8"),
        "local:1",
        "-c",
        "CMD [\"/bin/sh\"]",
    ]);
    let target = format!("{host}/kiln/test:1");
    k.ok(&["tag", "local:1", &target]);
    let first = k.ok(&["push", &target]);
    assert!(first.contains(": Pushed"), "{first}");
    assert!(!first.contains("Layer already exists"), "{first}");

    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{target}"),
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            let layer = inspect["Layers"][0].as_str().expect("a layer").to_owned();
            assert!(
                first.contains(&format!("{layer}: Pushed")),
                "kiln printed {first}, skopeo saw {layer}"
            );
            let digest = inspect["Digest"].as_str().expect("digest");
            assert!(first.contains(digest), "{first} vs {digest}");
        }
        Ok(out) => panic!(
            "skopeo inspect failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!("skopeo is absent: the registry's view is not checked"),
    }

    let second = k.ok(&["push", &target]);
    assert!(second.contains("(0 uploaded)"), "{second}");
    assert!(!second.contains(": Pushed"), "{second}");

    let other = Kiln::new();
    let pulled = other.ok(&["pull", &target]);
    assert!(pulled.starts_with("Digest: sha256:"), "{pulled}");
    let inspect: serde_json::Value =
        serde_json::from_str(&other.ok(&["inspect", &target])).expect("json");
    assert_eq!(inspect[0]["Config"]["config"]["Cmd"][0], "/bin/sh");
}

#[test]
fn pushing_an_unknown_image_or_to_a_dead_registry_fails_clearly() {
    let k = Kiln::new();
    let err = k.fails(&["push", "127.0.0.1:1/nothing:1"]);
    assert!(err.contains("no image named"), "{err}");
    let src = k.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    k.ok(&["import", src.to_str().expect("utf8"), "127.0.0.1:1/app:1"]);
    let err = k.fails(&["push", "127.0.0.1:1/app:1"]);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}
