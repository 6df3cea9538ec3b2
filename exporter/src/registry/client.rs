//! `Registry`: the shared, cloneable handle every push and pull goes through.
//!
//! It keeps one *endpoint* per registry host: an oci-client `Client` built for that host
//! (scheme, TLS roots, credentials, token cache) and a plain reqwest client for the few
//! requests oci-client does not offer (the `/v2/` ping that checks credentials). The
//! scheme is decided once per host: HTTPS, or plain HTTP when HTTPS fails and the host
//! is loopback or listed as insecure.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};

use super::auth::{self, Credential};
use super::config::RegistryConfig;
use super::error::{Error, Result, chain};
use super::reference::{ImageRef, is_loopback_host, normalize_registry_host};
use super::retry::{Failure, Op, retry};

/// A handle on the registries kiln talks to. Cheap to clone; clones share connections,
/// credentials and tokens, so parallel pulls and pushes should use clones of one handle.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegistryConfig,
    certificates: Vec<Certificate>,
    /// host -> endpoint; a tokio mutex so one probe per host runs while others wait.
    endpoints: tokio::sync::Mutex<HashMap<String, Endpoint>>,
}

/// One registry host as reached: the clients, the scheme, the credential.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    /// Pulls, manifests, HEADs, mounts and chunked uploads (PATCH per 4 MiB).
    pub(crate) oci: oci_client::Client,
    /// Single-request streamed uploads (POST, then one PUT with the whole body).
    pub(crate) oci_single: oci_client::Client,
    pub(crate) auth: oci_client::secrets::RegistryAuth,
    http: reqwest::Client,
    scheme: &'static str,
}

impl Registry {
    /// Builds the handle. Reads the CA files now (so a bad path fails early); nothing
    /// touches the network until the first request.
    pub fn new(config: RegistryConfig) -> Result<Registry> {
        // reqwest is built without a default provider (DESIGN: ring, not aws-lc); the
        // process default may already be set by another handle, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut certificates = Vec::new();
        for path in &config.ca_files {
            certificates.extend(read_pem_bundle(path)?);
        }
        Ok(Registry {
            inner: Arc::new(Inner {
                config,
                certificates,
                endpoints: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configuration this handle was built with.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Whether plain HTTP may be used for `host`.
    fn http_allowed(&self, host: &str) -> bool {
        is_loopback_host(host)
            || self
                .inner
                .config
                .insecure_registries
                .iter()
                .any(|h| normalize_registry_host(h) == host)
            || self
                .inner
                .config
                .mirrors
                .iter()
                .any(|m| m.starts_with("http://") && normalize_registry_host(m) == host)
    }

    /// The endpoint for `host` (the API host, e.g. `index.docker.io`), creating it on
    /// first use.
    pub(crate) async fn endpoint(&self, host: &str) -> Result<Endpoint> {
        let mut endpoints = self.inner.endpoints.lock().await;
        if let Some(endpoint) = endpoints.get(host) {
            return Ok(endpoint.clone());
        }
        // Credentials are keyed by the name users log in with (docker.io for Hub).
        let name = normalize_registry_host(host);
        let given = self.inner.config.given_credentials.iter();
        let credential = match given
            .filter(|(registry, _)| normalize_registry_host(registry) == name)
            .map(|(_, credential)| credential.clone())
            .next()
        {
            Some(credential) => credential,
            None => auth::credential_for(&self.inner.config.auth, &name)?,
        };
        let endpoint = self.connect(host, credential).await?;
        endpoints.insert(host.to_owned(), endpoint.clone());
        Ok(endpoint)
    }

    /// Decides the scheme for `host` and builds its clients.
    async fn connect(&self, host: &str, credential: Credential) -> Result<Endpoint> {
        let http = self.reqwest_client(host)?;
        let mut scheme = "https";
        if self.http_allowed(host) {
            let op = Op {
                registry: host,
                repository: "",
                what: &format!("{host}: ping /v2/"),
            };
            // Try HTTPS, then HTTP; "any HTTP answer" means the scheme works.
            let (found, _) = retry(&self.inner.config, op.what, |_| async {
                let https_error = match http.get(format!("https://{host}/v2/")).send().await {
                    Ok(_) => return Ok("https"),
                    Err(e) => chain(&e),
                };
                // The host speaks TLS but its certificate is not trusted: falling back to
                // plain HTTP would hide the real problem (and send credentials in clear).
                if https_error.to_ascii_lowercase().contains("certificate") {
                    return Err(Failure::Fatal(Error::Connect {
                        registry: host.to_owned(),
                        reason: format!("{https_error} (add the registry's CA to the CA files)"),
                    }));
                }
                match http.get(format!("http://{host}/v2/")).send().await {
                    // A TLS server answering plain HTTP says 400 and is no registry.
                    Ok(r)
                        if r.status() == reqwest::StatusCode::BAD_REQUEST
                            && !r.headers().contains_key("docker-distribution-api-version") =>
                    {
                        Err(Failure::Fatal(Error::Connect {
                            registry: host.to_owned(),
                            reason: https_error,
                        }))
                    }
                    Ok(_) => Ok("http"),
                    Err(e) if e.is_connect() => Err(Failure::Transient(chain(&e))),
                    Err(e) => Err(Failure::Fatal(Error::Connect {
                        registry: host.to_owned(),
                        reason: chain(&e),
                    })),
                }
            })
            .await
            .map_err(|e| match e {
                Error::RetriesExhausted { cause, .. } => Error::Connect {
                    registry: host.to_owned(),
                    reason: cause,
                },
                other => other,
            })?;
            scheme = found;
        }
        let protocol = if scheme == "http" {
            ClientProtocol::HttpsExcept(vec![host.to_owned()])
        } else {
            ClientProtocol::Https
        };
        // ClientConfig is not Clone (it may hold a resolver closure): build it twice.
        let oci_config = |single_request: bool| ClientConfig {
            protocol: protocol.clone(),
            extra_root_certificates: self.inner.certificates.clone(),
            connect_timeout: Some(self.inner.config.connect_timeout),
            max_concurrent_upload: self.inner.config.max_parallel_uploads.max(1),
            use_monolithic_push: single_request,
            // kiln picks the platform itself (pull.rs); oci-client must not.
            platform_resolver: None,
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let build = |config| {
            oci_client::Client::try_from(config).map_err(|e| Error::Connect {
                registry: host.to_owned(),
                reason: chain(&e),
            })
        };
        let oci = build(oci_config(false))?;
        let oci_single = build(oci_config(true))?;
        let auth = credential.to_oci();
        oci.store_auth_if_needed(host, &auth).await;
        oci_single.store_auth_if_needed(host, &auth).await;
        Ok(Endpoint {
            host: host.to_owned(),
            oci,
            oci_single,
            auth,
            http,
            scheme,
        })
    }

    fn reqwest_client(&self, host: &str) -> Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.inner.config.connect_timeout)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")));
        let mut roots = Vec::new();
        for cert in &self.inner.certificates {
            let cert = reqwest::Certificate::from_pem(&cert.data).map_err(|e| Error::Connect {
                registry: host.to_owned(),
                reason: format!("CA certificate: {}", chain(&e)),
            })?;
            roots.push(cert);
        }
        if !roots.is_empty() {
            builder = builder.tls_certs_merge(roots);
        }
        builder.build().map_err(|e| Error::Connect {
            registry: host.to_owned(),
            reason: chain(&e),
        })
    }

    /// Checks `username`/`password` against `registry` as `docker login` does and, when
    /// they work, stores them in the docker config (or its credential helper). Returns
    /// the config file written. A refusal is [`Error::Unauthorized`]:
    /// `127.0.0.1:5000: unauthorized: check the user name and password (kiln login 127.0.0.1:5000)`.
    pub async fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<std::path::PathBuf> {
        let name = normalize_registry_host(registry);
        let host = if name == super::reference::DOCKER_HUB {
            super::reference::DOCKER_HUB_API.to_owned()
        } else {
            name.clone()
        };
        let endpoint = self.endpoint(&host).await?;
        endpoint
            .check_credentials(&name, username, password)
            .await?;
        // The endpoint cached the old credential; forget it so the new one is used.
        self.inner.endpoints.lock().await.remove(&host);
        auth::store_credential(&self.inner.config.auth, &name, username, password)
    }

    /// Removes `registry`'s credentials from the docker config; whether there were any.
    pub async fn logout(&self, registry: &str) -> Result<bool> {
        let name = normalize_registry_host(registry);
        self.inner.endpoints.lock().await.clear();
        auth::logout(&self.inner.config.auth, &name)
    }

    /// The hosts to try for `reference`, mirrors first for Docker Hub images, each with
    /// the reference rewritten to that host.
    pub(crate) fn candidates(&self, reference: &ImageRef) -> Vec<(String, ImageRef)> {
        let mut out = Vec::new();
        if reference.is_docker_hub() {
            for mirror in &self.inner.config.mirrors {
                let host = normalize_registry_host(mirror);
                if !host.is_empty() && host != super::reference::DOCKER_HUB {
                    out.push((host.clone(), reference.on_host(&host)));
                }
            }
        }
        out.push((reference.api_host().to_owned(), reference.clone()));
        out
    }
}

impl Endpoint {
    /// GET /v2/ with the credentials: Basic directly, or exchanged at the Bearer realm.
    async fn check_credentials(&self, name: &str, username: &str, password: &str) -> Result<()> {
        let url = format!("{}://{}/v2/", self.scheme, self.host);
        let connect = |e: reqwest::Error| Error::Connect {
            registry: name.to_owned(),
            reason: chain(&e),
        };
        let unauthorized = || Error::Unauthorized {
            registry: name.to_owned(),
        };
        let first = self.http.get(&url).send().await.map_err(connect)?;
        if first.status().is_success() {
            // An open registry takes any credentials; docker stores them all the same.
            return Ok(());
        }
        let challenge = first
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if first.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Err(Error::Registry {
                what: format!("{name}: login"),
                reason: format!("GET {url}: HTTP {}", first.status()),
            });
        }
        let response = if challenge.to_ascii_lowercase().starts_with("bearer") {
            let realm = challenge_param(&challenge, "realm").ok_or_else(|| Error::Registry {
                what: format!("{name}: login"),
                reason: format!("Bearer challenge without realm: {challenge}"),
            })?;
            let mut request = self.http.get(realm).basic_auth(username, Some(password));
            if let Some(service) = challenge_param(&challenge, "service") {
                request = request.query(&[("service", service)]);
            }
            request.send().await.map_err(connect)?
        } else {
            self.http
                .get(&url)
                .basic_auth(username, Some(password))
                .send()
                .await
                .map_err(connect)?
        };
        match response.status() {
            s if s.is_success() => Ok(()),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                Err(unauthorized())
            }
            s => Err(Error::Registry {
                what: format!("{name}: login"),
                reason: format!("HTTP {s}"),
            }),
        }
    }
}

/// `key="value"` out of a `WWW-Authenticate` challenge.
fn challenge_param(challenge: &str, key: &str) -> Option<String> {
    let start = challenge.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &challenge[start..];
    rest.find('"').map(|end| rest[..end].to_owned())
}

/// Splits a PEM bundle into one oci-client certificate per `CERTIFICATE` block.
fn read_pem_bundle(path: &Path) -> Result<Vec<Certificate>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::fs::read_to_string(path).map_err(|source| Error::File {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let block = &rest[start..start + len + END.len()];
        out.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: format!("{block}\n").into_bytes(),
        });
        rest = &rest[start + len + END.len()..];
    }
    if out.is_empty() {
        return Err(Error::CaBundle {
            path: path.to_owned(),
        });
    }
    Ok(out)
}
