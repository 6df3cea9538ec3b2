//! The `# check=` directive's value, read as BuildKit's `ParseLintOptions` reads it.

use super::Rule;

/// Which rules run and whether findings are errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// `skip=A,B`: rules turned off.
    pub skip: Vec<String>,
    /// `skip=all`: every non-experimental rule off.
    pub skip_all: bool,
    /// `experimental=A,B`: experimental rules turned on.
    pub experimental: Vec<String>,
    /// `experimental=all`: every experimental rule on.
    pub experimental_all: bool,
    /// `error=true`: findings fail the build.
    pub error: bool,
}

/// A `# check=` value BuildKit refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckConfigError {
    /// A part without `=`, or a key other than `skip`, `experimental` and `error`.
    #[error("invalid check option {0:?}")]
    InvalidOption(String),
    /// `error=` with something other than a boolean.
    #[error(
        "failed to parse check option {option:?}: strconv.ParseBool: parsing {value:?}: invalid syntax"
    )]
    NotBool {
        /// The whole part, `error=maybe`.
        option: String,
        /// The value, `maybe`.
        value: String,
    },
}

impl CheckConfig {
    /// Parses `skip=A,B;experimental=C;error=true` (parts in any order, each optional).
    /// As in BuildKit, the value is cut into at most three parts at `;`.
    pub fn parse(value: &str) -> Result<CheckConfig, CheckConfigError> {
        let value = value.trim();
        let mut config = CheckConfig::default();
        if value.is_empty() {
            return Ok(config);
        }
        for part in value.splitn(3, ';') {
            let Some((key, v)) = part.split_once('=') else {
                return Err(CheckConfigError::InvalidOption(part.to_owned()));
            };
            match key.trim() {
                "skip" => match v.trim() {
                    "all" => config.skip_all = true,
                    list => config.skip = split_list(list),
                },
                "experimental" => match v.trim() {
                    "all" => config.experimental_all = true,
                    list => config.experimental = split_list(list),
                },
                "error" => {
                    config.error =
                        parse_bool(v.trim()).ok_or_else(|| CheckConfigError::NotBool {
                            option: part.to_owned(),
                            value: v.trim().to_owned(),
                        })?;
                }
                other => return Err(CheckConfigError::InvalidOption(other.to_owned())),
            }
        }
        Ok(config)
    }

    /// This configuration with an instruction's own `# check=` comment on top, as
    /// BuildKit's `WithMergedConfig`: its skips and experimental rules are added, its
    /// `error=` is not (whether findings fail the build is the file's choice).
    pub fn merged(&self, local: &CheckConfig) -> CheckConfig {
        let mut out = self.clone();
        out.skip_all |= local.skip_all;
        out.experimental_all |= local.experimental_all;
        out.skip.extend(local.skip.iter().cloned());
        out.experimental.extend(local.experimental.iter().cloned());
        out
    }

    /// Whether `rule` runs: an experimental rule only when named (`skip` does not reach
    /// it), any other unless skipped.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.iter().any(|r| r == rule.name)
        } else {
            !self.skip_all && !self.skip.iter().any(|r| r == rule.name)
        }
    }
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',').map(|r| r.trim().to_owned()).collect()
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: Result<CheckConfig, CheckConfigError>) {
        assert_eq!(CheckConfig::parse(value), expected, "{value}");
    }

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parts() {
        check("", Ok(CheckConfig::default()));
        check(
            "skip=A, B ;error=True",
            Ok(CheckConfig {
                skip: list(&["A", "B"]),
                error: true,
                ..CheckConfig::default()
            }),
        );
        check(
            " experimental=all; skip=all ",
            Ok(CheckConfig {
                skip_all: true,
                experimental_all: true,
                ..CheckConfig::default()
            }),
        );
        check(
            "experimental=CopyIgnoredFile",
            Ok(CheckConfig {
                experimental: list(&["CopyIgnoredFile"]),
                ..CheckConfig::default()
            }),
        );
    }

    #[test]
    fn refusals() {
        check(
            "skip",
            Err(CheckConfigError::InvalidOption("skip".to_owned())),
        );
        check(
            "warn=true",
            Err(CheckConfigError::InvalidOption("warn".to_owned())),
        );
        check(
            "error=1;skip=A;error=x;more",
            Err(CheckConfigError::NotBool {
                option: "error=x;more".to_owned(),
                value: "x;more".to_owned(),
            }),
        );
    }

    #[test]
    fn enabled_rules() {
        use crate::lint::{COPY_IGNORED_FILE, INVALID_DEFINITION_DESCRIPTION, STAGE_NAME_CASING};
        let all = CheckConfig::default();
        assert!(all.enabled(&STAGE_NAME_CASING));
        // Stable since frontend 1.21 (BuildKit 4187c344c).
        assert!(all.enabled(&COPY_IGNORED_FILE));
        assert!(!all.enabled(&INVALID_DEFINITION_DESCRIPTION));
        let skip = CheckConfig::parse("skip=all;experimental=InvalidDefinitionDescription")
            .expect("parse");
        assert!(!skip.enabled(&STAGE_NAME_CASING));
        assert!(!skip.enabled(&COPY_IGNORED_FILE));
        assert!(skip.enabled(&INVALID_DEFINITION_DESCRIPTION));
    }
}
