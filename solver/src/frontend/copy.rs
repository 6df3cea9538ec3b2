//! Lowering COPY and ADD: sources from a context, a stage, an image, heredocs, a URL or
//! a git repository; `--chmod`, `--chown`, `--link`, `--parents`, `--exclude`; and the
//! history string BuildKit writes.

use super::*;

impl Lowerer<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy(
        &mut self,
        stage_index: usize,
        state: &mut StageState,
        copy: &Copy,
        is_add: bool,
        span: Span,
        label: String,
        stage: &str,
    ) -> Result<(), LowerError> {
        let keyword = if is_add { "ADD" } else { "COPY" };
        if !is_add && let Some(url) = copy.sources.iter().find(|s| is_url(s)) {
            return Err(
                LowerError::at(span, format!("source can't be a URL for COPY: {url}"))
                    .hint("use ADD to download a file, or RUN with wget/curl"),
            );
        }
        if copy.checksum.is_some()
            && (!is_add || copy.sources.len() != 1 || !is_url(&copy.sources[0]))
        {
            return Err(LowerError::at(
                span,
                if is_add {
                    "checksum requires a single HTTP(S) source"
                } else {
                    "checksum can't be specified for COPY"
                },
            ));
        }
        let chmod = match &copy.chmod {
            None => None,
            Some(text) => Some(Chmod::parse(text).map_err(|e| LowerError::at(span, e))?),
        };
        let heredoc_sources: Vec<&String> = copy
            .sources
            .iter()
            .filter(|s| s.starts_with("<<"))
            .collect();
        // Heredocs beside paths (`COPY file <<EOF /dest/`): the paths from their source,
        // then the heredocs from their own tree, as BuildKit copies SourceContents after
        // SourcePaths.
        let mixed = !heredoc_sources.is_empty() && heredoc_sources.len() != copy.sources.len();
        let heredoc_files = if heredoc_sources.is_empty() {
            None
        } else {
            Some(self.heredoc_files(copy, state, span, stage)?)
        };
        let (source_vertex, context, sources) =
            if let (Some((vertex, names)), false) = (&heredoc_files, mixed) {
                (*vertex, None, names.clone())
            } else if is_add && crate::ops::git::is_git_url(&copy.sources[0]) {
                if copy.sources.len() != 1 {
                    return Err(LowerError::at(
                        span,
                        "kiln's ADD takes one git repository per instruction",
                    )
                    .hint("split them into one ADD each"));
                }
                let (source, keep_git_dir, checksum) = git_add_source(copy, span)?;
                let label = format!("[internal] git clone {}", copy.sources[0]);
                let vertex = self.add(
                    Op::Git(GitOp {
                        source,
                        keep_git_dir,
                        checksum,
                    }),
                    Vec::new(),
                    Step {
                        label,
                        span: Some(span),
                        stage: stage.to_owned(),
                    },
                );
                (vertex, None, vec![String::new()])
            } else if is_add && is_url(&copy.sources[0]) {
                if copy.sources.len() != 1 {
                    return Err(
                        LowerError::at(span, "kiln's ADD takes one URL per instruction")
                            .hint("split the URLs into one ADD each"),
                    );
                }
                let url = copy.sources[0].clone();
                let name = url_file_name(&url);
                let vertex = self.add(
                    Op::Http(HttpOp {
                        url: url.clone(),
                        checksum: copy.checksum.clone(),
                        name: name.clone(),
                    }),
                    Vec::new(),
                    Step {
                        label: format!("[internal] download {url}"),
                        span: Some(span),
                        stage: stage.to_owned(),
                    },
                );
                (vertex, None, vec![name])
            } else {
                let source = match &copy.from {
                    None => FromSource::Context("context".to_owned()),
                    Some(from) => self.resolve_from(from, stage_index, span)?,
                };
                let (vertex, context) = match source {
                    FromSource::Context(name) => (self.context_vertex(&name), Some(name)),
                    FromSource::Stage(index) => (self.stage_fs(index, span)?, None),
                    FromSource::Image(reference) => (
                        self.image_vertex(&reference, &state.platform.clone(), span, stage)?
                            .0,
                        None,
                    ),
                };
                let mut sources = Vec::new();
                for source in copy.sources.iter().filter(|s| !s.starts_with("<<")) {
                    // `--parents` keeps the path below a `/./` pivot; the pivot itself is
                    // cleaned apart, since cleaning would drop the `.`.
                    let whole = if copy.parents {
                        source.replacen("/./", "/", 1)
                    } else {
                        source.clone()
                    };
                    let cleaned = crate::context::clean_context_path(&whole)
                        .map_err(|e| LowerError::at(span, e.to_string()))?;
                    sources.push(cleaned);
                }
                (vertex, context, sources)
            };
        let parents = copy.parents.then(|| {
            copy.sources
                .iter()
                .map(|s| match s.split_once("/./") {
                    Some((pivot, _)) => {
                        crate::context::clean_context_path(pivot).unwrap_or_default()
                    }
                    None => String::new(),
                })
                .collect()
        });
        let cwd = match state.image.config.working_dir.as_str() {
            "" => "/",
            dir => dir,
        };
        let dest = if copy.dest.starts_with('/') {
            clean_abs(&copy.dest)
        } else {
            clean_abs(&format!("{cwd}/{}", copy.dest))
        };
        let dest_is_dir = copy.dest.ends_with('/')
            || copy.dest.ends_with("/.")
            || copy.dest == "."
            || copy.dest.is_empty();
        // ADD unpacks local archives unless --unpack=false; remote files only on request.
        let unpack = is_add
            && copy.unpack.unwrap_or(!is_url(&copy.sources[0]))
            && heredoc_sources.is_empty();
        let op = Op::Copy(CopyOp {
            sources,
            dest,
            dest_is_dir,
            chown: copy.chown.clone(),
            chmod,
            excludes: copy.excludes.clone(),
            context,
            parents,
            unpack,
            heredocs: match (&heredoc_files, mixed) {
                (Some((_, names)), true) => names.clone(),
                _ => Vec::new(),
            },
        });
        let step = Step {
            label,
            span: Some(span),
            stage: stage.to_owned(),
        };
        // --link copies onto nothing, so its result (and its cache) does not depend on
        // what is below; a merge then puts it on top. BuildKit drops --link with --chmod.
        state.fs = if copy.link && copy.chmod.is_none() {
            let scratch = self.add(
                Op::Scratch,
                Vec::new(),
                Step {
                    label: "[internal] scratch".to_owned(),
                    span: Some(span),
                    stage: stage.to_owned(),
                },
            );
            let mut inputs = vec![scratch, source_vertex];
            inputs.extend(heredoc_files.as_ref().filter(|_| mixed).map(|(v, _)| *v));
            let linked = self.add(op, inputs, step.clone());
            self.add(
                Op::Merge,
                vec![state.fs, linked],
                Step {
                    label: format!("[internal] link {}", step.label),
                    ..step
                },
            )
        } else {
            let mut inputs = vec![state.fs, source_vertex];
            inputs.extend(heredoc_files.as_ref().filter(|_| mixed).map(|(v, _)| *v));
            self.add(op, inputs, step)
        };
        state.layers.push(LayerSource::Vertex(state.fs));
        let mut history = keyword.to_owned();
        if copy.parents {
            history.push_str(" --parents");
        }
        if let Some(chown) = &copy.chown {
            history.push_str(&format!(" --chown={chown}"));
        }
        if let Some(chmod) = &copy.chmod {
            history.push_str(&format!(" --chmod={chmod}"));
        }
        // Heredocs are named by their delimiter without its quotes, after the paths.
        for source in copy.sources.iter().filter(|s| !s.starts_with("<<")) {
            history.push(' ');
            history.push_str(source);
        }
        for heredoc in &copy.heredocs {
            history.push_str(&format!(" <<{}", heredoc.name));
        }
        history.push(' ');
        history.push_str(&copy.dest);
        history.push_str(" # buildkit");
        push_history(&mut state.image, history, true);
        Ok(())
    }

    /// A COPY's heredocs as files of an empty tree (each named by its delimiter, expanded
    /// unless quoted): the vertex, and the names in order.
    fn heredoc_files(
        &mut self,
        copy: &Copy,
        state: &StageState,
        span: Span,
        stage: &str,
    ) -> Result<(VertexId, Vec<String>), LowerError> {
        let mut files = Vec::new();
        for heredoc in &copy.heredocs {
            // The delimiter becomes a file name in an empty tree: one plain name.
            let name = &heredoc.name;
            if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
                return Err(LowerError::at(
                    span,
                    format!("heredoc name {name:?} cannot be a file name"),
                )
                .hint("use a plain word such as <<EOF; the destination path says where it goes"));
            }
            let content = if heredoc.expand {
                kiln_parser::expand::expand_heredoc(&heredoc.body, self.escape, &state.env)
                    .map_err(|e| LowerError::expansion(span, &e))?
            } else {
                heredoc.body.clone()
            };
            files.push((heredoc.name.clone(), content));
        }
        let names = files.iter().map(|(n, _)| n.clone()).collect();
        let vertex = self.add(
            Op::Files(FilesOp { files }),
            Vec::new(),
            Step {
                label: "[internal] heredoc files".to_owned(),
                span: Some(span),
                stage: stage.to_owned(),
            },
        );
        Ok((vertex, names))
    }
}

pub(super) fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://") || source.starts_with("git@")
}

/// The name a downloaded file gets: the URL path's last part, or `__unnamed__`.
pub(super) fn url_file_name(url: &str) -> String {
    let path = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    let path = path.split_once('/').map_or("", |(_, p)| p);
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() && name != "." && name != ".." => name.to_owned(),
        _ => "__unnamed__".to_owned(),
    }
}

/// The git source of `ADD URL`, with `--keep-git-dir` and `--checksum` merged with the
/// URL's query as BuildKit's `convert_copy.go` merges them (they must agree).
fn git_add_source(
    copy: &Copy,
    span: Span,
) -> Result<(crate::ops::git::GitSource, bool, Option<String>), LowerError> {
    let mut source = crate::ops::git::parse(&copy.sources[0])
        .map_err(|e| LowerError::at(span, e.to_string()).hint("see https://docs.docker.com/reference/dockerfile/#adding-private-git-repositories for the URL forms"))?;
    if source.mtime_commit {
        return Err(LowerError::at(
            span,
            format!(
                "{}: ?mtime= applies to a git build context only; BuildKit's ADD accepts and ignores it, kiln refuses a setting that would do nothing",
                copy.sources[0]
            ),
        )
        .hint("drop ?mtime= from the ADD"));
    }
    let keep = match (copy.keep_git_dir, source.keep_git_dir.take()) {
        (true, Some(false)) => {
            return Err(
                LowerError::at(span, "inconsistent keep-git-dir configuration")
                    .hint("give --keep-git-dir or ?keep-git-dir=, not both"),
            );
        }
        (flag, query) => flag || query.unwrap_or(false),
    };
    let checksum = match (copy.checksum.clone(), source.checksum.take()) {
        (Some(flag), Some(query)) if flag.trim_start_matches("sha1:") != query => {
            return Err(
                LowerError::at(span, format!("checksum mismatch {flag:?} != {query:?}"))
                    .hint("give --checksum or ?checksum=, not both"),
            );
        }
        (flag, query) => flag.or(query),
    };
    Ok((source, keep, checksum))
}
