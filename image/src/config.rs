//! The image configuration JSON: the whole document ([`ImageConfig`]) and its `config`
//! object ([`ContainerConfig`]) in Docker's field names — BuildKit writes Docker's
//! extensions (`Healthcheck`, `OnBuild`, `Shell`) into OCI configs too — and the history.
//!
//! Metadata instructions (ENV, LABEL, CMD ...) change only the `config` object; they
//! make no layer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An empty JSON object, the value type of `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `HEALTHCHECK`, as Docker stores it (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    /// Time one check may take.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    /// Grace period after start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    /// Time between checks during the start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    /// Failures before unhealthy.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub retries: u32,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// The `config` object of an image: what a container of it starts with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `USER`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `EXPOSE`, as `80/tcp`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, Empty>,
    /// `ENV`, as `KEY=value`, in the order first set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `VOLUME`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Empty>,
    /// `WORKDIR`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// `LABEL`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Whether `Cmd`/`Entrypoint` are already escaped (Windows only; BuildKit sets it for
    /// shell-form commands on Linux too, for compatibility).
    #[serde(default, skip_serializing_if = "is_false")]
    pub args_escaped: bool,
    /// `HEALTHCHECK`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers, as written after the keyword.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_build: Vec<String>,
    /// `SHELL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
}

/// The `PATH` a container gets when its image sets none (Docker's and BuildKit's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ContainerConfig {
    /// The value of `key` in `Env`.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    /// Sets `key` in `Env`, in place when it is already there (order is kept, as Docker).
    pub fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|pair| pair.split_once('=').map_or(pair.as_str(), |(k, _)| k) == key)
        {
            Some(existing) => *existing = entry,
            None => self.env.push(entry),
        }
    }

    /// `Env` as (key, value) pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }
}

/// One history entry of the image JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran (RFC 3339), or `SOURCE_DATE_EPOCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction, in BuildKit's words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    /// `buildkit.dockerfile.v0` for steps of a Dockerfile.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    /// True when the step made no layer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_layer: bool,
}

/// `rootfs` of the image config: the layers' diff_ids, bottom first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The uncompressed layer digests, bottom first.
    pub diff_ids: Vec<String>,
}

/// The image config document (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// When the image was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// `MAINTAINER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// `amd64`, `arm64` ...
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// `v7`, `v8` ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// What a container starts with.
    #[serde(default)]
    pub config: ContainerConfig,
    /// The layers.
    pub rootfs: RootFs,
    /// One entry per step, layers or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// kiln's inline build cache (`--cache-to type=inline`): the cache record of the
    /// image's own steps, base64, as BuildKit keeps its own under `moby.buildkit.cache.v0`.
    #[serde(
        rename = "kiln.cache.v1",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inline_cache: Option<String>,
}

/// This machine's architecture in OCI's words (`x86_64` -> `amd64`).
pub fn host_architecture() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    }
}

/// RFC 3339 in UTC for seconds since the epoch, as Go's `time.Time` marshals it.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Seconds since the epoch of a UTC civil date and time (Howard Hinnant's
/// days-from-civil), for the parsers of RFC 3339 and HTTP dates.
pub fn unix_seconds(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hour * 3600 + minute * 60 + second
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_485_449_953), "2017-01-26T16:59:13Z");
        assert_eq!(super::rfc3339(1_764_014_400), "2025-11-24T20:00:00Z");
    }

    use super::*;

    #[test]
    fn env_keeps_order_and_replaces_in_place() {
        let mut c = ContainerConfig::default();
        c.env_set("PATH", DEFAULT_PATH);
        c.env_set("A", "1");
        c.env_set("PATH", "/bin");
        assert_eq!(c.env, vec!["PATH=/bin".to_owned(), "A=1".to_owned()]);
        assert_eq!(c.env_get("A"), Some("1"));
        assert_eq!(c.env_get("B"), None);
    }

    #[test]
    fn serialises_with_docker_field_names_and_omits_empty_fields() {
        let mut c = ContainerConfig {
            cmd: Some(vec!["sh".into()]),
            working_dir: "/app".into(),
            ..ContainerConfig::default()
        };
        c.exposed_ports.insert("80/tcp".into(), Empty {});
        c.healthcheck = Some(HealthConfig {
            test: vec!["NONE".into()],
            ..HealthConfig::default()
        });
        assert_eq!(
            serde_json::to_string(&c).expect("json"),
            r#"{"ExposedPorts":{"80/tcp":{}},"Cmd":["sh"],"WorkingDir":"/app","Healthcheck":{"Test":["NONE"]}}"#
        );
        let back: ContainerConfig =
            serde_json::from_str(&serde_json::to_string(&c).expect("json")).expect("parse");
        assert_eq!(back, c);
    }
}
