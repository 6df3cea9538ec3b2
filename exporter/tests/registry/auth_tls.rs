//! A registry behind TLS (self-signed CA made here) with htpasswd auth.

use std::os::unix::fs::PermissionsExt as _;

use kiln_exporter::registry::{AuthConfig, Error, ImageRef, Platform, Registry, RegistryConfig};

use crate::support::{
    OCI, RegistryServer, ServerOptions, TestImage, config, make_tls, skopeo_inspect, tools_present,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_push_over_tls_with_htpasswd() {
    if !tools_present() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tls = make_tls(work.path());
    let server = RegistryServer::start(ServerOptions {
        tls: Some(&tls),
        htpasswd: Some(("kiln", "s3cret")),
        ..ServerOptions::default()
    });
    let host = server.host();
    let docker_config = work.path().join("docker").join("config.json");
    let with_auth = |path: Option<std::path::PathBuf>| RegistryConfig {
        ca_files: vec![tls.ca_cert.clone()],
        auth: AuthConfig {
            docker_config: path,
            helper_dirs: vec![],
        },
        ..config()
    };

    // Wrong password: the message says what to do, nothing is written.
    let registry = Registry::new(with_auth(Some(docker_config.clone()))).unwrap();
    let err = registry.login(&host, "kiln", "wrong").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{host}: unauthorized: check the user name and password (kiln login {host})")
    );
    assert!(!docker_config.exists());

    // Right password: stored in config.json, 0600.
    let written = registry.login(&host, "kiln", "s3cret").await.unwrap();
    assert_eq!(written, docker_config);
    let text = std::fs::read_to_string(&docker_config).unwrap();
    assert!(text.contains(&host), "{text}");
    assert_eq!(
        std::fs::metadata(&docker_config)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Push with the stored credentials through a fresh handle; skopeo sees the image.
    let image = TestImage::new(work.path(), 7, &[50_000, 600_000], "amd64", &OCI);
    let target = ImageRef::parse(&format!("{host}/secure/app:1")).unwrap();
    let registry = Registry::new(with_auth(Some(docker_config.clone()))).unwrap();
    let report = registry
        .push_image(std::slice::from_ref(&target), &image.push_image())
        .await
        .unwrap();
    assert_eq!(report.uploaded(), 3);
    let inspect = skopeo_inspect(&target.to_string(), Some("kiln:s3cret"));
    let layers: Vec<String> = inspect["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(layers, image.layer_digests());
    let resolved = registry
        .resolve(&target, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    assert_eq!(resolved.manifest_digest, image.manifest_digest());

    // Without credentials the push is refused with the same clear message.
    let anonymous = Registry::new(with_auth(None)).unwrap();
    let err = anonymous
        .push_image(std::slice::from_ref(&target), &image.push_image())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");

    // Without the CA, TLS fails and kiln does not fall back to plain HTTP.
    let untrusted = Registry::new(RegistryConfig {
        auth: AuthConfig {
            docker_config: Some(docker_config.clone()),
            helper_dirs: vec![],
        },
        ..config()
    })
    .unwrap();
    let err = untrusted
        .resolve(&target, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // Logout forgets the credentials.
    assert!(registry.logout(&host).await.unwrap());
    assert!(
        !std::fs::read_to_string(&docker_config)
            .unwrap()
            .contains(&host)
    );
}
