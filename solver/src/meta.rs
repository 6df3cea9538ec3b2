//! What metadata instructions do to the image config, as BuildKit's dispatchers do it,
//! and the history text (`created_by`) BuildKit writes for each.
//!
//! Callers pass instructions already expanded (`kiln_parser::expand`); RUN, COPY, ADD,
//! FROM and WORKDIR's directory are the graph's business, not this module's.

use kiln_image::config::{ContainerConfig, Empty, HealthConfig, ImageConfig};
use kiln_parser::ast::{Command, Kind};

/// A metadata instruction that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetaError {
    /// A port that is not `N`, `N/proto` or `N-M/proto`.
    #[error(
        "invalid port {0:?} in EXPOSE; write a number, optionally with /tcp or /udp (e.g. 8080/tcp)"
    )]
    BadPort(String),
    /// An instruction that does not change the config alone.
    #[error("{0} is not a config instruction")]
    NotMetadata(String),
}

/// The default SHELL.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_owned(), "-c".to_owned()]
}

/// `args` for a command, wrapped in the SHELL when written in shell form.
pub fn command_args(command: &Command, shell: &[String]) -> Vec<String> {
    match command {
        Command::Exec(args) => args.clone(),
        Command::Shell(line) => {
            let mut args: Vec<String> = if shell.is_empty() {
                default_shell()
            } else {
                shell.to_vec()
            };
            args.push(line.clone());
            args
        }
    }
}

/// Go's `%q` of a string list: `["a" "b c"]`.
pub fn go_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a string list: `[a b c]`.
fn go_plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_owned();
    }
    let secs = ns / 1_000_000_000;
    let rest = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if rest == 0 {
        out.push_str(&format!("{s}s"));
    } else {
        let frac = format!("{rest:09}");
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    }
    out
}

/// Normalises EXPOSE ports: `80` -> `80/tcp`, ranges expanded.
fn ports(spec: &str) -> Result<Vec<String>, MetaError> {
    let bad = || MetaError::BadPort(spec.to_owned());
    let (range, proto) = match spec.split_once('/') {
        Some((r, p)) => (r, p.to_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = range.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// What a stage remembers between metadata instructions.
#[derive(Debug, Clone, Default)]
pub struct StageMeta {
    /// A CMD came earlier in this stage (then ENTRYPOINT keeps it).
    pub cmd_set: bool,
    /// Where each key of the config's `Env` is (a hint, checked on use).
    pub env_index: std::collections::HashMap<String, usize>,
}

/// Sets `key` in `list` (entries in first-set order, the first with the key replaced, as
/// `ImageConfig::env_set` does) through `index`, a key -> position hint that is checked
/// on each use and rebuilt when it disagrees with `list`. N distinct keys then cost O(N)
/// instead of a scan of the list per key (100k ENV lines took 103 s).
pub fn set_indexed<T>(
    list: &mut Vec<T>,
    index: &mut std::collections::HashMap<String, usize>,
    key: &str,
    key_of: impl Fn(&T) -> &str,
    value: T,
) {
    let trusted =
        |list: &Vec<T>, index: &std::collections::HashMap<String, usize>| index.len() == list.len();
    if !trusted(list, index)
        || index
            .get(key)
            .is_some_and(|&i| list.get(i).map(&key_of) != Some(key))
    {
        index.clear();
        for (i, entry) in list.iter().enumerate() {
            index.entry(key_of(entry).to_owned()).or_insert(i);
        }
    }
    match index.get(key) {
        Some(&i) => list[i] = value,
        None => {
            // With repeated keys in `list` the index is shorter and rebuilt each time:
            // still correct, only slower, for a base image with a duplicated variable.
            index.insert(key.to_owned(), list.len());
            list.push(value);
        }
    }
}

/// Applies one metadata instruction to `image` and returns its history text, if BuildKit
/// writes one (ONBUILD writes none). The stage's SHELL wraps shell-form commands.
pub fn apply(
    image: &mut ImageConfig,
    state: &mut StageMeta,
    kind: &Kind,
    original: &str,
) -> Result<Option<String>, MetaError> {
    let config: &mut ContainerConfig = &mut image.config;
    let shell = config.shell.clone();
    Ok(Some(match kind {
        Kind::Env(pairs) => {
            for kv in pairs {
                set_indexed(
                    &mut config.env,
                    &mut state.env_index,
                    &kv.key,
                    |entry: &String| entry.split_once('=').map_or(entry.as_str(), |(k, _)| k),
                    format!("{}={}", kv.key, kv.value),
                );
            }
            let text: Vec<String> = pairs
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            format!("ENV {}", text.join(" "))
        }
        Kind::Label(pairs) => {
            for kv in pairs {
                config.labels.insert(kv.key.clone(), kv.value.clone());
            }
            let text: Vec<String> = pairs
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            format!("LABEL {}", text.join(" "))
        }
        Kind::Cmd(command) => {
            let args = command_args(command, &shell);
            config.cmd = Some(args.clone());
            config.args_escaped = true;
            state.cmd_set = true;
            format!("CMD {}", go_list(&args))
        }
        Kind::Entrypoint(command) => {
            let args = command_args(command, &shell);
            config.entrypoint = Some(args.clone());
            // An inherited CMD makes no sense for a new ENTRYPOINT; one from this stage stays.
            if !state.cmd_set {
                config.cmd = None;
            }
            format!("ENTRYPOINT {}", go_list(&args))
        }
        Kind::Expose(list) => {
            // BuildKit sorts the ports as written, then expands ranges, and records that list.
            let mut sorted = list.clone();
            sorted.sort();
            let mut all = Vec::new();
            for p in &sorted {
                all.extend(ports(p)?);
            }
            for p in &all {
                config.exposed_ports.insert(p.clone(), Empty {});
            }
            format!("EXPOSE {}", go_plain_list(&all))
        }
        Kind::User(user) => {
            config.user = user.clone();
            format!("USER {user}")
        }
        Kind::Workdir(dir) => {
            config.working_dir = normalize_workdir(&config.working_dir, dir);
            format!("WORKDIR {}", config.working_dir)
        }
        Kind::Volume(list) => {
            for v in list {
                config.volumes.insert(v.clone(), Empty {});
            }
            format!("VOLUME {}", go_plain_list(list))
        }
        Kind::Stopsignal(sig) => {
            config.stop_signal = sig.clone();
            format!("STOPSIGNAL {sig}")
        }
        Kind::Shell(args) => {
            config.shell = args.clone();
            format!("SHELL {}", go_plain_list(args))
        }
        Kind::Healthcheck(h) => {
            let test = match &h.command {
                None => vec!["NONE".to_owned()],
                Some(Command::Exec(args)) => {
                    let mut t = vec!["CMD".to_owned()];
                    t.extend(args.iter().cloned());
                    t
                }
                Some(Command::Shell(line)) => vec!["CMD-SHELL".to_owned(), line.clone()],
            };
            let health = HealthConfig {
                test: test.clone(),
                interval: h.interval.unwrap_or(0),
                timeout: h.timeout.unwrap_or(0),
                start_period: h.start_period.unwrap_or(0),
                start_interval: h.start_interval.unwrap_or(0),
                retries: h.retries.unwrap_or(0),
            };
            let text = format!(
                "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                go_plain_list(&test),
                go_duration(health.interval),
                go_duration(health.timeout),
                go_duration(health.start_period),
                go_duration(health.start_interval),
                health.retries
            );
            config.healthcheck = Some(health);
            text
        }
        Kind::Onbuild(_) => {
            let trigger = original
                .trim_start()
                .get(7..)
                .map(str::trim)
                .unwrap_or_default()
                .to_owned();
            config.on_build.push(trigger);
            return Ok(None);
        }
        Kind::Maintainer(name) => {
            image.author = Some(name.clone());
            format!("MAINTAINER {name}")
        }
        Kind::Arg(decls) => {
            let text: Vec<String> = decls
                .iter()
                .map(|d| match &d.default {
                    Some(v) => format!("{}={v}", d.name),
                    None => d.name.clone(),
                })
                .collect();
            format!("ARG {}", text.join(" "))
        }
        other => {
            let name = format!("{other:?}");
            return Err(MetaError::NotMetadata(
                name.split('(').next().unwrap_or("").to_uppercase(),
            ));
        }
    }))
}

/// BuildKit's `system.NormalizeWorkdir` on Linux (`util/system/path.go`): an absolute
/// WORKDIR is kept as given (trailing `/`, `.` and `..` included); a relative one is
/// `path.Join`ed to the current one (cleaned, no trailing `/`); an empty one keeps the
/// current one.
pub fn normalize_workdir(current: &str, dir: &str) -> String {
    let parent = if current.is_empty() {
        "/".to_owned()
    } else if current.starts_with('/') {
        current.to_owned()
    } else {
        clean_abs(current)
    };
    if dir.is_empty() {
        parent
    } else if dir.starts_with('/') {
        dir.to_owned()
    } else {
        clean_abs(&format!("{parent}/{dir}"))
    }
}

/// Cleans an absolute path (`/a/./b/../c` -> `/a/c`).
pub fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_is_normalized_as_buildkit_does() {
        // BuildKit util/system/path.go NormalizePath with keepSlash=false.
        assert_eq!(normalize_workdir("", "/app/"), "/app/");
        assert_eq!(normalize_workdir("/", "/x/./y/../z"), "/x/./y/../z");
        assert_eq!(normalize_workdir("/app/", "sub/"), "/app/sub");
        assert_eq!(normalize_workdir("/a/b", "../c/./d/"), "/a/c/d");
        assert_eq!(normalize_workdir("", "rel"), "/rel");
        assert_eq!(normalize_workdir("/app/", ""), "/app/");
        assert_eq!(normalize_workdir("/a", ".."), "/");
    }

    fn run(lines: &[&str]) -> (ImageConfig, Vec<String>) {
        let mut image = ImageConfig::default();
        let mut state = StageMeta::default();
        let text = format!("FROM scratch\n{}\n", lines.join("\n"));
        let parsed = kiln_parser::parse(&text).expect("parse");
        let mut history = Vec::new();
        for i in &parsed.stages[0].instructions {
            if let Some(h) = apply(&mut image, &mut state, &i.kind, &i.original).expect("apply") {
                history.push(h);
            }
        }
        (image, history)
    }

    #[test]
    fn cmd_and_entrypoint() {
        let (image, history) = run(&[
            "CMD echo hi",
            "SHELL [\"/bin/bash\", \"-c\"]",
            "ENTRYPOINT [\"tini\", \"--\"]",
        ]);
        assert_eq!(
            image.config.cmd,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(
            image.config.entrypoint,
            Some(vec!["tini".into(), "--".into()])
        );
        assert_eq!(history[0], r#"CMD ["/bin/sh" "-c" "echo hi"]"#);
        assert_eq!(history[1], "SHELL [/bin/bash -c]");
        assert_eq!(history[2], r#"ENTRYPOINT ["tini" "--"]"#);
        let (image, _) = run(&["SHELL [\"/bin/bash\", \"-c\"]", "CMD make"]);
        assert_eq!(
            image.config.cmd,
            Some(vec!["/bin/bash".into(), "-c".into(), "make".into()])
        );
    }

    #[test]
    fn env_label_expose_volume_user_workdir() {
        let (image, history) = run(&[
            "ENV A=1 B=2",
            "ENV A=3",
            "LABEL org.x=y",
            "EXPOSE 80 53/udp 8000-8001",
            "VOLUME /data /logs",
            "USER app",
            "WORKDIR /srv",
            "WORKDIR app/../web",
            "STOPSIGNAL SIGINT",
        ]);
        assert_eq!(image.config.env, vec!["A=3".to_owned(), "B=2".to_owned()]);
        assert_eq!(image.config.labels["org.x"], "y");
        let ports: Vec<&String> = image.config.exposed_ports.keys().collect();
        assert_eq!(ports, vec!["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
        assert_eq!(history[3], "EXPOSE [53/udp 80/tcp 8000/tcp 8001/tcp]");
        assert_eq!(history[4], "VOLUME [/data /logs]");
        assert_eq!(image.config.user, "app");
        assert_eq!(image.config.working_dir, "/srv/web");
        assert_eq!(image.config.stop_signal, "SIGINT");
    }

    #[test]
    fn healthcheck_and_onbuild() {
        let (image, history) = run(&[
            "HEALTHCHECK --interval=5s --timeout=3s --retries=3 CMD curl -f http://localhost/",
            "ONBUILD RUN make",
            "MAINTAINER me@example.com",
        ]);
        let h = image.config.healthcheck.expect("healthcheck");
        assert_eq!(h.test, vec!["CMD-SHELL", "curl -f http://localhost/"]);
        assert_eq!(h.interval, 5_000_000_000);
        assert_eq!(
            history[0],
            "HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/] Interval:5s Timeout:3s StartPeriod:0s StartInterval:0s Retries:3}"
        );
        assert_eq!(image.config.on_build, vec!["RUN make".to_owned()]);
        assert_eq!(image.author.as_deref(), Some("me@example.com"));
    }

    #[test]
    fn bad_ports_are_errors() {
        let mut image = ImageConfig::default();
        let parsed = kiln_parser::parse("FROM scratch\nEXPOSE http\n").expect("parse");
        let i = &parsed.stages[0].instructions[0];
        assert!(matches!(
            apply(&mut image, &mut StageMeta::default(), &i.kind, &i.original),
            Err(MetaError::BadPort(_))
        ));
    }

    #[test]
    fn durations_like_go() {
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
    }
}
