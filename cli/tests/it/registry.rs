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
