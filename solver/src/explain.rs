//! `--explain`: why a step ran, in the user's terms.
//!
//! A step that runs keeps, beside its cache record, what its key was made of
//! ([`StepFacts`]: the op, its inputs' keys, the digest of each context file it copies,
//! the download or commit it reads). At the end of a build the key of every step is kept
//! under the build's scope (the Dockerfile and the target), each step named by its stage
//! and its place in it ([`step_name`]), so the next build of the same target can find, for
//! a step that runs, the facts of the same step of the build before and say what differs
//! ([`explain`]). Secrets never enter a key, so they never appear here either.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most context files whose digests a step's facts keep; a COPY of more is explained
/// as "the context files it copies changed".
pub const MAX_FILES: usize = 2000;

/// What one run of a step was made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepFacts {
    /// The step as the user wrote it (`[build 2/4] RUN make`).
    pub label: String,
    /// The operation, as its key has it.
    pub op: Value,
    /// Each input: the step it is (its label, empty for a context or scratch) and its key.
    pub inputs: Vec<(String, String)>,
    /// Context files read: path -> digest prefix; none when there were more than
    /// [`MAX_FILES`] or the step reads no context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<crate::context::FileDigests>,
    /// The digest of everything it read from the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// What identifies a download (checksum, validators or content digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The git commit a git source is at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// Why a step was not taken from the cache, before any comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forced {
    /// Nothing forced it.
    No,
    /// `--no-cache`.
    NoCache,
    /// `--no-cache-filter` names its stage.
    NoCacheFilter,
}

/// `op` as a step's facts keep it: the value of an environment variable whose name marks
/// a secret is replaced by a fingerprint, so the store never holds it and a change still
/// shows.
pub fn op_facts(op: &Value) -> Value {
    let mut op = op.clone();
    if let Some(env) = op.get_mut("env").and_then(Value::as_array_mut) {
        for entry in env.iter_mut() {
            let Some((key, value)) = entry.as_str().and_then(|kv| kv.split_once('=')) else {
                continue;
            };
            if kiln_parser::lint::looks_secret(key) {
                let print = blake3::hash(value.as_bytes()).to_hex();
                *entry = Value::String(format!("{key}=<hidden {}>", &print[..16]));
            }
        }
    }
    op
}

/// A step's stable name inside its build: its stage and its place among the stage's
/// steps, so that an edited instruction is still the same step.
pub fn step_name(stage: &str, ordinal: usize) -> String {
    format!("{stage}#{ordinal}")
}

/// The lines that say why `new` ran: `old` is the same step of the previous build of the
/// target, with its key (`None`: there was none, or its record is gone).
pub fn explain(
    old: Option<(&str, Option<&StepFacts>)>,
    new_key: &str,
    new: &StepFacts,
    forced: Forced,
) -> Vec<String> {
    match forced {
        Forced::NoCache => return vec!["--no-cache".to_owned()],
        Forced::NoCacheFilter => return vec!["--no-cache-filter names its stage".to_owned()],
        Forced::No => {}
    }
    let Some((old_key, old)) = old else {
        return vec!["first build of this step".to_owned()];
    };
    if old_key == new_key {
        return vec!["the cached result was pruned".to_owned()];
    }
    let Some(old) = old else {
        return vec!["its key changed; the previous build's record of it was pruned".to_owned()];
    };
    let mut lines = Vec::new();
    let instruction_changed = instruction(&old.label) != instruction(&new.label);
    if instruction_changed {
        lines.push(format!(
            "the instruction changed: {} -> {}",
            instruction(&old.label),
            instruction(&new.label)
        ));
    }
    op_lines(&old.op, &new.op, instruction_changed, &mut lines);
    file_lines(old, new, &mut lines);
    if old.remote != new.remote && old.remote.is_some() && new.remote.is_some() {
        lines.push("the downloaded file changed".to_owned());
    }
    if let (Some(a), Some(b)) = (&old.commit, &new.commit)
        && a != b
    {
        lines.push(format!(
            "the git commit moved: {} -> {}",
            short(a),
            short(b)
        ));
    }
    for (i, (label, key)) in new.inputs.iter().enumerate() {
        let before = old.inputs.get(i).map(|(_, k)| k.as_str());
        if before.is_some_and(|k| k != key) && !label.is_empty() {
            lines.push(format!("an earlier step changed: {label}"));
        }
    }
    if lines.is_empty() {
        lines.push("its key changed (no difference kiln can name)".to_owned());
    }
    lines
}

/// The instruction part of a label, without its `[stage n/m]` counter.
fn instruction(label: &str) -> &str {
    match label
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        Some((_, text)) => text,
        None => label,
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

/// The differences between two ops (serialised with their kind under `op`): the base
/// image's digest, the environment (build args and ENV) by variable, and any other field
/// by name.
fn op_lines(old: &Value, new: &Value, instruction_changed: bool, lines: &mut Vec<String>) {
    let kind = |v: &Value| v.get("op").and_then(Value::as_str).map(str::to_owned);
    if kind(new).as_deref() == Some("image") {
        let digest = |v: &Value| v.get("digest").and_then(Value::as_str).map(str::to_owned);
        if let (Some(a), Some(b)) = (digest(old), digest(new))
            && a != b
        {
            lines.push(format!(
                "the base image moved: {} -> {}",
                short(&a),
                short(&b)
            ));
        }
        return;
    }
    let (Some(a), Some(b)) = (old.as_object(), new.as_object()) else {
        return;
    };
    if kind(old) != kind(new) {
        if !instruction_changed {
            lines.push("the step's operation changed".to_owned());
        }
        return;
    }
    for (field, value) in b {
        let before = a.get(field);
        if before == Some(value) {
            continue;
        }
        match (field.as_str(), before) {
            ("env", Some(before)) => env_lines(before, value, lines),
            // The instruction's text says the rest already.
            _ if instruction_changed => {}
            (field, _) => lines.push(format!("{} changed", field_name(field))),
        }
    }
}

fn field_name(field: &str) -> String {
    match field {
        "argv" => "the command".to_owned(),
        "cwd" => "the working directory (WORKDIR)".to_owned(),
        "user" => "the user (USER)".to_owned(),
        "network" => "the network (--network)".to_owned(),
        "mounts" => "its --mount options".to_owned(),
        other => format!("its {other}"),
    }
}

/// `K=V` lists compared by variable: what changed, appeared or went.
fn env_lines(old: &Value, new: &Value, lines: &mut Vec<String>) {
    let split = |v: &Value| -> BTreeMap<String, String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    };
    let (a, b) = (split(old), split(new));
    for (key, value) in &b {
        // A name that marks a secret (BuildKit's SecretsUsedInArgOrEnv rule) is said to
        // have changed, never with its values.
        let hidden = kiln_parser::lint::looks_secret(key);
        match a.get(key) {
            Some(before) if before == value => {}
            Some(_) if hidden => lines.push(format!(
                "build arg or ENV {key} changed (its value is not shown: the name marks a secret)"
            )),
            Some(before) => lines.push(format!(
                "build arg or ENV {key} changed: {before:?} -> {value:?}"
            )),
            None if hidden => lines.push(format!("build arg or ENV {key} is new")),
            None => lines.push(format!("build arg or ENV {key} is new: {value:?}")),
        }
    }
    for key in a.keys().filter(|k| !b.contains_key(*k)) {
        lines.push(format!("build arg or ENV {key} is gone"));
    }
}

/// Context files that changed, appeared or went (at most five named).
fn file_lines(old: &StepFacts, new: &StepFacts, lines: &mut Vec<String>) {
    if old.content == new.content {
        return;
    }
    let (Some(a), Some(b)) = (&old.files, &new.files) else {
        if old.content.is_some() && new.content.is_some() {
            lines.push("the context files it copies changed".to_owned());
        }
        return;
    };
    let mut found = Vec::new();
    for (path, digest) in b {
        match a.get(path) {
            Some(before) if before == digest => {}
            Some(before) => {
                found.push(format!("context file {path} changed: {before} -> {digest}"))
            }
            None => found.push(format!("context file {path} is new")),
        }
    }
    for path in a.keys().filter(|p| !b.contains_key(*p)) {
        found.push(format!("context file {path} is gone"));
    }
    if found.is_empty() {
        // Same files, same contents: a name or mode changed.
        found.push("the context files it copies changed (names or modes)".to_owned());
    }
    let more = found.len().saturating_sub(5);
    lines.extend(found.into_iter().take(5));
    if more > 0 {
        lines.push(format!("and {more} more context files"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(env: &[&str]) -> StepFacts {
        StepFacts {
            label: "[2/3] RUN make".to_owned(),
            op: json!({"op": "exec", "argv": ["/bin/sh", "-c", "make"], "env": env, "cwd": "/"}),
            inputs: vec![("[1/3] FROM busybox".to_owned(), "k1".to_owned())],
            ..StepFacts::default()
        }
    }

    #[test]
    fn says_what_changed() {
        let old = run(&["PATH=/bin", "V=1"]);
        let new = run(&["PATH=/bin", "V=2", "W=x"]);
        assert_eq!(
            explain(Some(("a", Some(&old))), "b", &new, Forced::No),
            [
                "build arg or ENV V changed: \"1\" -> \"2\"",
                "build arg or ENV W is new: \"x\""
            ]
        );
        assert_eq!(
            explain(None, "b", &new, Forced::No),
            ["first build of this step"]
        );
        assert_eq!(
            explain(Some(("b", Some(&old))), "b", &new, Forced::No),
            ["the cached result was pruned"]
        );
        assert_eq!(
            explain(Some(("a", Some(&old))), "b", &new, Forced::NoCache),
            ["--no-cache"]
        );
        let mut moved = run(&["PATH=/bin", "V=1"]);
        moved.inputs[0].1 = "k2".to_owned();
        assert_eq!(
            explain(Some(("a", Some(&old))), "b", &moved, Forced::No),
            ["an earlier step changed: [1/3] FROM busybox"]
        );
        let mut edited = run(&["PATH=/bin", "V=1"]);
        edited.label = "[2/3] RUN make all".to_owned();
        edited.op["argv"] = json!(["/bin/sh", "-c", "make all"]);
        assert_eq!(
            explain(Some(("a", Some(&old))), "b", &edited, Forced::No),
            ["the instruction changed: RUN make -> RUN make all"]
        );
    }

    #[test]
    fn secret_looking_values_are_never_shown_nor_kept() {
        let old = run(&["API_TOKEN=abc", "V=1"]);
        let new = run(&["API_TOKEN=def", "V=1"]);
        let stored = |f: &StepFacts| StepFacts {
            op: op_facts(&f.op),
            ..f.clone()
        };
        let (old, new) = (stored(&old), stored(&new));
        let text = serde_json::to_string(&(&old, &new)).unwrap();
        assert!(!text.contains("abc") && !text.contains("def"), "{text}");
        assert_eq!(
            explain(Some(("a", Some(&old))), "b", &new, Forced::No),
            [
                "build arg or ENV API_TOKEN changed (its value is not shown: the name marks a secret)"
            ]
        );
    }

    #[test]
    fn names_context_files_and_base_images() {
        let copy = |files: &[(&str, &str)]| StepFacts {
            label: "[3/3] COPY . /app".to_owned(),
            op: json!({"op": "copy", "sources": ["."]}),
            files: Some(
                files
                    .iter()
                    .map(|(p, d)| ((*p).to_owned(), (*d).to_owned()))
                    .collect(),
            ),
            content: Some(files.iter().map(|(_, d)| *d).collect()),
            ..StepFacts::default()
        };
        let old = copy(&[("a.txt", "111"), ("b.txt", "222")]);
        let new = copy(&[("a.txt", "333"), ("c.txt", "444")]);
        assert_eq!(
            explain(Some(("a", Some(&old))), "b", &new, Forced::No),
            [
                "context file a.txt changed: 111 -> 333",
                "context file c.txt is new",
                "context file b.txt is gone"
            ]
        );
        let image = |digest: &str| StepFacts {
            label: "[1/3] FROM busybox".to_owned(),
            op: json!({"op": "image", "reference": "busybox", "digest": digest}),
            ..StepFacts::default()
        };
        assert_eq!(
            explain(
                Some(("a", Some(&image("sha256:aaaaaaaaaaaaaaaa")))),
                "b",
                &image("sha256:bbbbbbbbbbbbbbbb"),
                Forced::No
            ),
            ["the base image moved: aaaaaaaaaaaa -> bbbbbbbbbbbb"]
        );
    }
}
