//! Credentials from docker's `config.json`, and writing them back for `kiln login`.
//!
//! Lookup order for a registry, as docker does it: `credHelpers[registry]`, then
//! `credsStore`, then `auths[registry]` (`auth` = base64 `user:password`, or
//! `username`/`password`, or `identitytoken`). A helper is the program
//! `docker-credential-<name>`: `get` reads the server URL on stdin and prints
//! `{"ServerURL","Username","Secret"}`; `store` reads that JSON; `erase` reads the URL.
//! Docker Hub's entries are under `https://index.docker.io/v1/`; other keys may carry a
//! scheme or path (`https://r.io/v2/`), which are ignored when matching.
//!
//! The config file is written atomically (temp file in the same directory, mode 0600,
//! fsync, rename) and every key kiln does not know is kept.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::error::{Error, Result};
use super::reference::{DOCKER_HUB, DOCKER_HUB_AUTH_KEY, normalize_registry_host};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// No credentials: anonymous access (public images, open registries).
    Anonymous,
    /// A user name and password (Basic, or exchanged for a Bearer token).
    Basic {
        /// The user name.
        username: String,
        /// The password or access token.
        password: String,
    },
    /// A registry token used as `Authorization: Bearer` (docker's `identitytoken` /
    /// a helper's `<token>` user).
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    // Never print secrets, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Credential {
    pub(crate) fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        use oci_client::secrets::RegistryAuth;
        match self {
            Credential::Anonymous => RegistryAuth::Anonymous,
            Credential::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credential::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// Where credentials come from: a docker config file and where its helpers are.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// The docker config file (`config.json`); `None` = anonymous only.
    /// [`default_docker_config_path`] gives docker's own choice.
    pub docker_config: Option<PathBuf>,
    /// Directories searched for `docker-credential-<name>` before `PATH`.
    pub helper_dirs: Vec<PathBuf>,
}

/// Docker's choice of config file: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`. Reads the environment, so the cli calls it once and
/// passes the path down.
pub fn default_docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The key docker stores `registry`'s credentials under.
fn auth_key(registry: &str) -> String {
    let host = normalize_registry_host(registry);
    if host == DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY.to_owned()
    } else {
        host
    }
}

/// The credentials for `registry` (`host[:port]`, `docker.io` for Docker Hub).
pub fn credential_for(auth: &AuthConfig, registry: &str) -> Result<Credential> {
    let Some(path) = &auth.docker_config else {
        return Ok(Credential::Anonymous);
    };
    let config = read_config(path)?;
    let host = normalize_registry_host(registry);
    if let Some(helper) = helper_for(&config, &host) {
        return helper_get(auth, &helper, &host);
    }
    let Some(auths) = config.get("auths").and_then(Value::as_object) else {
        return Ok(Credential::Anonymous);
    };
    let entry = auths
        .iter()
        .find(|(key, _)| normalize_registry_host(key) == host)
        .map(|(_, v)| v);
    match entry {
        Some(entry) => entry_credential(path, &host, entry),
        None => Ok(Credential::Anonymous),
    }
}

fn helper_for(config: &Map<String, Value>, host: &str) -> Option<String> {
    let per_registry = config
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|helpers| {
            helpers
                .iter()
                .find(|(key, _)| normalize_registry_host(key) == host)
                .and_then(|(_, v)| v.as_str())
        });
    per_registry
        .or_else(|| config.get("credsStore").and_then(Value::as_str))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

fn entry_credential(path: &Path, host: &str, entry: &Value) -> Result<Credential> {
    let bad = |reason: String| Error::DockerConfig {
        path: path.to_owned(),
        reason: format!("auths entry for {host}: {reason}"),
    };
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(token) = field("identitytoken") {
        return Ok(Credential::Bearer(token.to_owned()));
    }
    if let Some(encoded) = field("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| bad(format!("\"auth\" is not base64: {e}")))?;
        let text =
            String::from_utf8(decoded).map_err(|_| bad("\"auth\" is not UTF-8".to_owned()))?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| bad("\"auth\" must encode user:password".to_owned()))?;
        return Ok(Credential::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    match (field("username"), field("password")) {
        (Some(username), Some(password)) => Ok(Credential::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }),
        _ => Ok(Credential::Anonymous),
    }
}

fn read_config(path: &Path) -> Result<Map<String, Value>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(source) => {
            return Err(Error::File {
                path: path.to_owned(),
                source,
            });
        }
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::DockerConfig {
            path: path.to_owned(),
            reason: "expected a JSON object".to_owned(),
        }),
        Err(e) => Err(Error::DockerConfig {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Writes the config atomically: temp file in the same dir (0600), fsync, rename, fsync dir.
fn write_config(path: &Path, config: &Map<String, Value>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let io = |source| Error::File {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let mut text = serde_json::to_vec_pretty(config).map_err(|e| io(std::io::Error::other(e)))?;
    text.push(b'\n');
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(io)
}

/// Records `credential` for `registry` in the config file, as `docker login` does:
/// through the registry's credential helper when one is configured, else in `auths`.
pub fn store_credential(
    auth: &AuthConfig,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<PathBuf> {
    let path = auth
        .docker_config
        .clone()
        .ok_or_else(|| Error::DockerConfig {
            path: PathBuf::new(),
            reason: "no docker config file to store credentials in".to_owned(),
        })?;
    let mut config = read_config(&path)?;
    let host = normalize_registry_host(registry);
    if let Some(helper) = helper_for(&config, &host) {
        let input = serde_json::json!({ "ServerURL": auth_key(&host), "Username": username, "Secret": password });
        run_helper(auth, &helper, &host, "store", input.to_string().as_bytes())?;
        return Ok(path);
    }
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(Error::DockerConfig {
            path,
            reason: "\"auths\" is not an object".to_owned(),
        });
    };
    // Drop differently spelled keys for the same registry so the new entry wins.
    auths.retain(|key, _| normalize_registry_host(key) != host);
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    auths.insert(auth_key(&host), serde_json::json!({ "auth": encoded }));
    write_config(&path, &config)?;
    Ok(path)
}

/// Removes `registry`'s credentials (`kiln logout`). Returns whether there were any.
pub fn logout(auth: &AuthConfig, registry: &str) -> Result<bool> {
    let Some(path) = &auth.docker_config else {
        return Ok(false);
    };
    let mut config = read_config(path)?;
    let host = normalize_registry_host(registry);
    let mut removed = false;
    if let Some(helper) = helper_for(&config, &host) {
        run_helper(auth, &helper, &host, "erase", auth_key(&host).as_bytes())?;
        removed = true;
    }
    if let Some(Value::Object(auths)) = config.get_mut("auths") {
        let before = auths.len();
        auths.retain(|key, _| normalize_registry_host(key) != host);
        if auths.len() != before {
            removed = true;
            write_config(path, &config)?;
        }
    }
    Ok(removed)
}

fn helper_get(auth: &AuthConfig, helper: &str, host: &str) -> Result<Credential> {
    let output = match run_helper(auth, helper, host, "get", auth_key(host).as_bytes()) {
        Ok(output) => output,
        // The protocol's way of saying "nothing stored": anonymous, as docker does.
        Err(Error::CredentialHelper { reason, .. }) if reason.contains("credentials not found") => {
            return Ok(Credential::Anonymous);
        }
        Err(e) => return Err(e),
    };
    let bad = |reason: String| Error::CredentialHelper {
        helper: helper.to_owned(),
        registry: host.to_owned(),
        reason,
    };
    let value: Value =
        serde_json::from_slice(&output).map_err(|e| bad(format!("invalid JSON on stdout: {e}")))?;
    let username = value
        .get("Username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = value
        .get("Secret")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(match (username, secret) {
        (_, "") => Credential::Anonymous,
        ("<token>", token) => Credential::Bearer(token.to_owned()),
        (username, secret) => Credential::Basic {
            username: username.to_owned(),
            password: secret.to_owned(),
        },
    })
}

/// Runs `docker-credential-<helper> <action>` with `input` on stdin; returns stdout.
fn run_helper(
    auth: &AuthConfig,
    helper: &str,
    host: &str,
    action: &str,
    input: &[u8],
) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::CredentialHelper {
        helper: helper.to_owned(),
        registry: host.to_owned(),
        reason,
    };
    if helper.contains('/') {
        return Err(bad("a helper name cannot contain '/'".to_owned()));
    }
    let program = format!("docker-credential-{helper}");
    let path = auth
        .helper_dirs
        .iter()
        .map(|dir| dir.join(&program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(&program));
    let mut child = Command::new(&path)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| bad(format!("cannot run {}: {e}", path.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading stdin is fine; its exit status tells.
        let _ = stdin.write_all(input);
    }
    let output = child
        .wait_with_output()
        .map_err(|e| bad(format!("waiting for {}: {e}", path.display())))?;
    if !output.status.success() {
        let mut reason = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(stderr.trim());
        }
        return Err(bad(format!(
            "`{action}` failed ({}): {reason}",
            output.status
        )));
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(config_json: &str, registry: &str, expected: Credential) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, config_json).unwrap();
        let auth = AuthConfig {
            docker_config: Some(path),
            helper_dirs: vec![],
        };
        assert_eq!(
            credential_for(&auth, registry).unwrap(),
            expected,
            "{config_json} for {registry}"
        );
    }

    fn basic(u: &str, p: &str) -> Credential {
        Credential::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn reads_auths_entries() {
        // "dTpwOnE=" is base64("u:p:q"): the password may contain ':'.
        check(
            r#"{"auths":{"r.io":{"auth":"dTpwOnE="}}}"#,
            "r.io",
            basic("u", "p:q"),
        );
        check(
            r#"{"auths":{"https://r.io/v2/":{"auth":"dTpwOnE="}}}"#,
            "r.io",
            basic("u", "p:q"),
        );
        check(
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpwOnE="}}}"#,
            "docker.io",
            basic("u", "p:q"),
        );
        check(
            r#"{"auths":{"r.io":{"username":"a","password":"b"}}}"#,
            "r.io",
            basic("a", "b"),
        );
        check(
            r#"{"auths":{"r.io":{"identitytoken":"t"}}}"#,
            "r.io",
            Credential::Bearer("t".into()),
        );
        check(
            r#"{"auths":{"r.io":{"auth":"dTpwOnE="}}}"#,
            "other.io",
            Credential::Anonymous,
        );
        check("", "r.io", Credential::Anonymous);
    }

    #[test]
    fn store_then_logout_round_trips_and_keeps_other_keys() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"psFormat":"x","auths":{"http://r.io":{"auth":"b2xkOm9sZA=="}}}"#,
        )
        .unwrap();
        let auth = AuthConfig {
            docker_config: Some(path.clone()),
            helper_dirs: vec![],
        };
        store_credential(&auth, "r.io", "me", "pw").unwrap();
        assert_eq!(credential_for(&auth, "r.io").unwrap(), basic("me", "pw"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("psFormat"), "{text}");
        assert!(logout(&auth, "r.io").unwrap());
        assert_eq!(
            credential_for(&auth, "r.io").unwrap(),
            Credential::Anonymous
        );
        assert!(!logout(&auth, "r.io").unwrap());
    }

    #[test]
    fn credential_helpers_speak_the_protocol() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        // The fake echoes the server URL it read on stdin as the user name.
        std::fs::write(
            &helper,
            "#!/bin/sh\nread url\ncase \"$url\" in\n  none*) echo 'credentials not found in native keychain'; exit 1;;\nesac\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"s3\"}' \"$url\" \"$url\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"r.io":"fake","none.io":"fake"}}"#).unwrap();
        let auth = AuthConfig {
            docker_config: Some(path),
            helper_dirs: vec![dir.path().to_owned()],
        };
        assert_eq!(credential_for(&auth, "r.io").unwrap(), basic("r.io", "s3"));
        assert_eq!(
            credential_for(&auth, "none.io").unwrap(),
            Credential::Anonymous
        );
        assert_eq!(
            credential_for(&auth, "x.io").unwrap(),
            Credential::Anonymous
        );
    }
}
