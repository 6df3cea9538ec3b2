//! Build-time variable expansion applied to instructions, exactly where BuildKit applies
//! it: ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR and ARG
//! defaults, plus the values of `--from`, `--chown`, `--chmod`, `--checksum`,
//! `--platform` and `RUN --mount` options. RUN, CMD, ENTRYPOINT, SHELL and HEALTHCHECK
//! commands are left alone: the shell in the container expands them.

use std::collections::BTreeSet;

use crate::ast::{ArgDecl, Copy, From, KeyValue, Kind, Mount, Run};
use crate::shell::{Env, Error, Lexer};

/// An expanded instruction and the variables it referenced but did not find (for the
/// `UndefinedVar` check).
#[derive(Debug, Clone, PartialEq)]
pub struct Expanded {
    /// The instruction with values expanded.
    pub kind: Kind,
    /// Variables referenced and not set.
    pub unmatched: BTreeSet<String>,
}

struct Expander<'a> {
    lexer: Lexer,
    env: &'a dyn Env,
    unmatched: BTreeSet<String>,
}

impl Expander<'_> {
    fn word(&mut self, word: &str) -> Result<String, Error> {
        let out = self.lexer.expand_word(word, self.env)?;
        self.unmatched.extend(out.unmatched);
        Ok(out.value)
    }

    fn words(&mut self, word: &str) -> Result<Vec<String>, Error> {
        let out = self.lexer.expand_words(word, self.env)?;
        self.unmatched.extend(out.unmatched);
        Ok(out.value)
    }

    fn opt(&mut self, word: &Option<String>) -> Result<Option<String>, Error> {
        word.as_deref().map(|w| self.word(w)).transpose()
    }

    fn all(&mut self, words: &[String]) -> Result<Vec<String>, Error> {
        words.iter().map(|w| self.word(w)).collect()
    }

    fn pairs(&mut self, pairs: &[KeyValue]) -> Result<Vec<KeyValue>, Error> {
        pairs
            .iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: self.word(&kv.key)?,
                    value: self.word(&kv.value)?,
                    legacy: kv.legacy,
                })
            })
            .collect()
    }

    fn copy(&mut self, c: &Copy) -> Result<Copy, Error> {
        Ok(Copy {
            // JSON-form paths are still expanded (BuildKit does), heredoc markers are not.
            sources: c
                .sources
                .iter()
                .map(|s| {
                    if s.starts_with("<<") {
                        Ok(s.clone())
                    } else {
                        self.word(s)
                    }
                })
                .collect::<Result<_, _>>()?,
            dest: self.word(&c.dest)?,
            heredocs: c.heredocs.clone(),
            from: self.opt(&c.from)?,
            chown: self.opt(&c.chown)?,
            chmod: self.opt(&c.chmod)?,
            link: c.link,
            parents: c.parents,
            excludes: self.all(&c.excludes)?,
            checksum: self.opt(&c.checksum)?,
            keep_git_dir: c.keep_git_dir,
            unpack: c.unpack,
            json: c.json,
        })
    }
}

/// Expands `kind` with `env` (the stage's ENV and the ARGs in scope, later entries winning).
pub fn expand(kind: &Kind, escape: char, env: &dyn Env) -> Result<Expanded, Error> {
    let mut x = Expander {
        lexer: Lexer::new(escape),
        env,
        unmatched: BTreeSet::new(),
    };
    let kind = match kind {
        Kind::From(f) => Kind::From(From {
            image: x.word(&f.image)?,
            platform: x.opt(&f.platform)?,
            alias: f.alias.clone(),
        }),
        Kind::Run(run) => Kind::Run(Run {
            mounts: run
                .mounts
                .iter()
                .map(|m| {
                    Ok(Mount {
                        kind: x.word(&m.kind)?,
                        options: m
                            .options
                            .iter()
                            .map(|(k, v)| Ok((k.clone(), x.word(v)?)))
                            .collect::<Result<_, Error>>()?,
                    })
                })
                .collect::<Result<_, Error>>()?,
            network: x.opt(&run.network)?,
            security: x.opt(&run.security)?,
            ..run.clone()
        }),
        Kind::Env(pairs) => Kind::Env(x.pairs(pairs)?),
        Kind::Label(pairs) => Kind::Label(x.pairs(pairs)?),
        Kind::Expose(ports) => Kind::Expose(
            ports
                .iter()
                .map(|p| x.words(p))
                .collect::<Result<Vec<_>, _>>()?
                .concat(),
        ),
        Kind::Volume(paths) => Kind::Volume(x.all(paths)?),
        Kind::User(user) => Kind::User(x.word(user)?),
        Kind::Workdir(dir) => Kind::Workdir(x.word(dir)?),
        Kind::Stopsignal(signal) => Kind::Stopsignal(x.word(signal)?),
        Kind::Add(c) => Kind::Add(x.copy(c)?),
        Kind::Copy(c) => Kind::Copy(x.copy(c)?),
        Kind::Arg(decls) => Kind::Arg(
            decls
                .iter()
                .map(|d| {
                    Ok(ArgDecl {
                        name: d.name.clone(),
                        default: x.opt(&d.default)?,
                    })
                })
                .collect::<Result<_, Error>>()?,
        ),
        other => other.clone(),
    };
    Ok(Expanded {
        kind,
        unmatched: x.unmatched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::Command;

    fn env() -> Vec<(String, String)> {
        vec![
            ("APP".into(), "/srv/app".into()),
            ("PORTS".into(), "80 443".into()),
            ("UID".into(), "1000".into()),
        ]
    }

    fn kind(line: &str) -> Kind {
        crate::parse(&format!("FROM scratch\n{line}\n"))
            .expect("parse")
            .stages[0]
            .instructions[0]
            .kind
            .clone()
    }

    fn check(line: &str, expected: &str) {
        let got = expand(&kind(line), '\\', &env()).expect("expand");
        let want = kind(expected);
        assert_eq!(got.kind, want, "{line}");
    }

    #[test]
    fn expands_where_buildkit_does() {
        check("WORKDIR $APP/src", "WORKDIR /srv/app/src");
        check(
            "COPY --chown=$UID:$UID src ${APP}/",
            "COPY --chown=1000:1000 src /srv/app/",
        );
        check("ENV DIR=$APP/data", "ENV DIR=/srv/app/data");
        check("USER ${UID}", "USER 1000");
        check("VOLUME $APP", "VOLUME /srv/app");
        check(
            "RUN --mount=type=cache,target=$APP/cache ls",
            "RUN --mount=type=cache,target=/srv/app/cache ls",
        );
    }

    #[test]
    fn ports_split_and_quotes_go() {
        let got = expand(&kind("EXPOSE $PORTS"), '\\', &env()).expect("expand");
        assert_eq!(got.kind, Kind::Expose(vec!["80".into(), "443".into()]));
        let got = expand(&kind("ENV A=\"x y\""), '\\', &env()).expect("expand");
        let Kind::Env(pairs) = got.kind else { panic!() };
        assert_eq!(pairs[0].value, "x y");
    }

    #[test]
    fn commands_are_left_to_the_shell() {
        let got = expand(&kind("RUN echo $APP"), '\\', &env()).expect("expand");
        let Kind::Run(run) = got.kind else { panic!() };
        assert_eq!(run.command, Command::Shell("echo $APP".into()));
        let got = expand(&kind("CMD echo $APP"), '\\', &env()).expect("expand");
        assert_eq!(got.kind, Kind::Cmd(Command::Shell("echo $APP".into())));
    }

    #[test]
    fn reports_undefined_variables() {
        let got = expand(&kind("WORKDIR $NOPE/x"), '\\', &env()).expect("expand");
        assert_eq!(got.unmatched, BTreeSet::from(["NOPE".to_owned()]));
    }
}

/// Expands the variables of a heredoc body (`COPY <<EOF` with an unquoted delimiter), as a
/// shell expands a here-document: `$NAME` and `${...}` are replaced, an escaped `$` is a
/// literal `$`, and quotes and every other character stay as written (an apostrophe in
/// the text is not an unterminated quote). Expansion may add at most
/// [`crate::shell::MAX_WORD_SIZE`] bytes to the body.
pub fn expand_heredoc(body: &str, escape: char, env: &dyn Env) -> Result<String, Error> {
    let lexer = Lexer::new(escape);
    let chars: Vec<char> = body.chars().collect();
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == escape && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        let end = match chars.get(i + 1) {
            Some('{') => {
                let mut depth = 0;
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => break chars.len(),
                        Some('{') => depth += 1,
                        Some('}') => {
                            depth -= 1;
                            if depth == 0 {
                                break j + 1;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            Some(n) if n.is_alphabetic() || *n == '_' => {
                let mut j = i + 1;
                while chars
                    .get(j)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    j += 1;
                }
                j
            }
            _ => {
                out.push('$');
                i += 1;
                continue;
            }
        };
        let token: String = chars[i..end].iter().collect();
        out.push_str(&lexer.expand_word(&token, env)?.value);
        // The body as written may be large; what variables add to it is bounded.
        if out.len() > body.len().saturating_add(crate::shell::MAX_WORD_SIZE) {
            return Err(Error {
                word: token,
                message: format!(
                    "the heredoc's variables add more than {} KiB to it, the most kiln allows",
                    crate::shell::MAX_WORD_SIZE / 1024
                ),
                limit: Some(crate::shell::Limit::Size),
            });
        }
        i = end;
    }
    Ok(out)
}

#[cfg(test)]
mod heredoc_tests {
    use super::*;

    #[test]
    fn heredoc_bodies_expand_variables_only() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        let got =
            expand_heredoc("it's $A and \"${A}\" ${B:-x} \\$A $ 5\n", '\\', &env).expect("expand");
        assert_eq!(got, "it's 1 and \"1\" x $A $ 5\n");
    }
}
