//! Registry credentials a client sends: `X-Registry-Auth` (push, pull: one docker
//! AuthConfig) and `X-Registry-Config` (build: a map of registry to AuthConfig), both
//! base64url JSON. They are used for that request only and never written anywhere.

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_exporter::registry::{Credential, ImageRef, normalize_registry_host};
use serde::Deserialize;

use crate::reply::ApiError;

/// Credentials per registry host (`host[:port]`, `docker.io` for Docker Hub).
pub(crate) type Given = Vec<(String, Credential)>;

/// Docker's AuthConfig, as its clients encode it.
#[derive(Debug, Default, Deserialize)]
struct AuthConfig {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default, rename = "serveraddress")]
    server_address: String,
    #[serde(default, rename = "identitytoken")]
    identity_token: String,
    #[serde(default, rename = "registrytoken")]
    registry_token: String,
}

impl AuthConfig {
    fn credential(&self) -> Option<Credential> {
        if !self.registry_token.is_empty() {
            return Some(Credential::Bearer(self.registry_token.clone()));
        }
        if !self.identity_token.is_empty() {
            return Some(Credential::Bearer(self.identity_token.clone()));
        }
        if !self.username.is_empty() || !self.password.is_empty() {
            return Some(Credential::Basic {
                username: self.username.clone(),
                password: self.password.clone(),
            });
        }
        if !self.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (username, password) = text.split_once(':')?;
            return Some(Credential::Basic {
                username: username.to_owned(),
                password: password.to_owned(),
            });
        }
        None
    }
}

fn decode(header: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(text.trim()).ok())
        .ok_or_else(|| ApiError::bad_request(format!("{header} is not base64url-encoded JSON")))
}

/// The registry host of an image name, as docker keys credentials.
fn host_of(name: &str) -> String {
    ImageRef::parse(name)
        .map(|r| normalize_registry_host(r.registry()))
        .unwrap_or_else(|_| "docker.io".to_owned())
}

/// `X-Registry-Auth` for an operation on `image`.
pub(crate) fn from_auth_header(value: Option<&str>, image: &str) -> Result<Given, ApiError> {
    let Some(text) = value.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let bytes = decode("X-Registry-Auth", text)?;
    let auth: AuthConfig = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("X-Registry-Auth is not a docker auth config: {e}"))
    })?;
    let Some(credential) = auth.credential() else {
        return Ok(Vec::new());
    };
    let host = if auth.server_address.is_empty() {
        host_of(image)
    } else {
        normalize_registry_host(&auth.server_address)
    };
    Ok(vec![(host, credential)])
}

/// `X-Registry-Config` of a build: credentials for the registries FROM pulls from.
pub(crate) fn from_config_header(value: Option<&str>) -> Result<Given, ApiError> {
    let Some(text) = value.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let bytes = decode("X-Registry-Config", text)?;
    let map: BTreeMap<String, AuthConfig> = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "X-Registry-Config is not a map of registry to auth config: {e}"
        ))
    })?;
    Ok(map
        .into_iter()
        .filter_map(|(host, auth)| {
            auth.credential()
                .map(|c| (normalize_registry_host(&host), c))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE.encode(json)
    }

    #[test]
    fn auth_headers_decode() {
        let given = from_auth_header(
            Some(&encode(
                r#"{"username":"u","password":"p","serveraddress":"127.0.0.1:5000"}"#,
            )),
            "127.0.0.1:5000/x",
        )
        .unwrap();
        assert_eq!(
            given,
            vec![(
                "127.0.0.1:5000".to_owned(),
                Credential::Basic {
                    username: "u".into(),
                    password: "p".into()
                }
            )]
        );
        // The docker CLI sends {} (or nothing) when it has no login: anonymous.
        assert!(
            from_auth_header(Some(&encode("{}")), "x")
                .unwrap()
                .is_empty()
        );
        assert!(from_auth_header(None, "x").unwrap().is_empty());
        let token = from_auth_header(Some(&encode(r#"{"identitytoken":"t"}"#)), "busybox").unwrap();
        assert_eq!(
            token,
            vec![("docker.io".to_owned(), Credential::Bearer("t".into()))]
        );
        assert!(from_auth_header(Some("%%%"), "x").is_err());
    }

    #[test]
    fn config_headers_decode() {
        let given = from_config_header(Some(&encode(
            r#"{"https://index.docker.io/v1/":{"auth":"dTpw"},"r.lan:5000":{}}"#,
        )))
        .unwrap();
        assert_eq!(
            given,
            vec![(
                "docker.io".to_owned(),
                Credential::Basic {
                    username: "u".into(),
                    password: "p".into()
                }
            )]
        );
    }
}
