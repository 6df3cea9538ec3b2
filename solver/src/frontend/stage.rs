//! Lowering one stage: its base (scratch, an image, a context, an earlier stage), the
//! platform it builds for, the base's ONBUILD triggers, then each instruction in turn.

use super::*;

impl Lowerer<'_> {
    pub(super) fn stage(
        &mut self,
        index: usize,
        base: &Base,
        states: &[Option<StageState>],
    ) -> Result<StageState, LowerError> {
        let stage = &self.file.stages[index];
        let name = self.stage_name(index);
        // BuildKit counts FROM and every instruction that makes a vertex: [name k/n].
        let total = 1 + stage
            .instructions
            .iter()
            .filter(|i| makes_vertex(&i.kind))
            .count();
        let platform = match &stage.from.platform {
            Some(expr) => {
                let text = self.expand_word(expr, &self.global_env, stage.span)?;
                if text.trim().is_empty() {
                    return Err(LowerError::at(
                        stage.span,
                        format!("empty platform value from expression {expr}"),
                    )
                    .hint("give the ARG a value, e.g. --build-arg or a default before FROM"));
                }
                parse_platform(&text).ok_or_else(|| {
                    LowerError::at(stage.span, format!("failed to parse platform {text}"))
                        .hint("write OS/ARCH[/VARIANT], e.g. linux/arm64")
                })?
            }
            None => match base {
                Base::Stage(parent) => states[*parent]
                    .as_ref()
                    .map_or_else(|| self.platform.clone(), |s| s.platform.clone()),
                _ => self.platform.clone(),
            },
        };
        let mut state;
        let mut triggers: Vec<String>;
        match base {
            Base::Scratch => {
                let fs = self.add(
                    Op::Scratch,
                    Vec::new(),
                    Step {
                        label: "[internal] scratch".to_owned(),
                        span: Some(stage.span),
                        stage: name.clone(),
                    },
                );
                state = StageState::fresh(
                    index,
                    &name,
                    &platform,
                    self.scratch_image(&platform),
                    fs,
                    Vec::new(),
                );
                triggers = Vec::new();
            }
            Base::Image(reference) => {
                let (fs, image_index) =
                    self.image_vertex(reference, &platform, stage.span, &name)?;
                let label = self.label(
                    &name,
                    1,
                    total,
                    &format!("FROM {}", self.base_images[image_index].reference),
                );
                self.steps.entry(fs).and_modify(|s| {
                    if s.label.starts_with("[internal]") {
                        s.label = label.clone();
                    }
                });
                let base = &self.base_images[image_index];
                let mut image = base.config.clone();
                image.created = None;
                // A base's inline cache describes the base's build, not this one.
                image.inline_cache = None;
                triggers = std::mem::take(&mut image.config.on_build);
                let layers = (0..base.layers.len())
                    .map(|layer| LayerSource::Base {
                        image: image_index,
                        layer,
                    })
                    .collect();
                state = StageState::fresh(index, &name, &platform, image, fs, layers);
            }
            Base::Context(context) => {
                let fs = self.context_tree(context, "", stage.span);
                let image = self.scratch_image(&platform);
                let layers = vec![LayerSource::Vertex(fs)];
                state = StageState::fresh(index, &name, &platform, image, fs, layers);
                triggers = Vec::new();
            }
            Base::Stage(parent) => {
                let Some(parent) = states[*parent].clone() else {
                    return Err(LowerError::at(
                        stage.span,
                        "internal error: a base stage was not lowered first",
                    ));
                };
                state = parent;
                state.platform = platform.clone();
                state.name = name.clone();
                state.index = index;
                state.meta = StageMeta::default();
                triggers = std::mem::take(&mut state.image.config.on_build);
            }
        }
        if !matches!(base, Base::Stage(_)) {
            if state.image.config.env_get("PATH").is_none() {
                state.image.config.env.push(DEFAULT_PATH_ENV.to_owned());
            }
            state.env = state.image.config.env_pairs();
        }
        let mut instructions: Vec<Instruction> = Vec::new();
        for trigger in triggers.drain(..) {
            let mut parsed = kiln_parser::parse_instruction(&trigger).map_err(|e| {
                LowerError::at(
                    stage.span,
                    format!("ONBUILD trigger {trigger:?} of the base image: {}", e.kind),
                )
            })?;
            parsed.span = stage.span;
            instructions.push(parsed);
        }
        instructions.extend(stage.instructions.iter().cloned());
        let mut step = 1;
        for instruction in &instructions {
            if makes_vertex(&instruction.kind) {
                step += 1;
            }
            self.instruction(index, &mut state, instruction, &name, step, total)?;
        }
        Ok(state)
    }

    pub(super) fn label(&self, stage: &str, step: usize, total: usize, text: &str) -> String {
        let text = one_line(text);
        if self.multi_stage {
            format!("[{stage} {step}/{total}] {text}")
        } else {
            format!("[{step}/{total}] {text}")
        }
    }

    pub(super) fn instruction(
        &mut self,
        stage_index: usize,
        state: &mut StageState,
        instruction: &Instruction,
        stage: &str,
        step: usize,
        total: usize,
    ) -> Result<(), LowerError> {
        let span = instruction.span;
        let expanded = kiln_parser::expand::expand(&instruction.kind, self.escape, &state.env)
            .map_err(|e| LowerError::expansion(span, &e))?;
        let kind = expanded.kind;
        let label = self.label(stage, step, total, &display_text(instruction));
        match &kind {
            Kind::Run(run) => self.run(state, run, span, label, stage),
            Kind::Copy(copy) | Kind::Add(copy) => {
                let is_add = matches!(kind, Kind::Add(_));
                self.copy(stage_index, state, copy, is_add, span, label, stage)
            }
            Kind::Workdir(_) => {
                let history = meta::apply(
                    &mut state.image,
                    &mut state.meta,
                    &kind,
                    &instruction.original,
                )
                .map_err(|e| LowerError::at(span, e.to_string()))?;
                // BuildKit compares the WORKDIR as stored (`/.` makes a layer); its mkdir
                // resolves the cleaned path (`fs.RootPath`).
                let with_layer = state.image.config.working_dir != "/";
                if with_layer {
                    let op = Op::Mkdir(MkdirOp {
                        path: crate::meta::clean_abs(&state.image.config.working_dir),
                        user: state.image.config.user.clone(),
                    });
                    state.fs = self.add(
                        op,
                        vec![state.fs],
                        Step {
                            label,
                            span: Some(span),
                            stage: stage.to_owned(),
                        },
                    );
                    state.layers.push(LayerSource::Vertex(state.fs));
                }
                push_history(&mut state.image, history.unwrap_or_default(), with_layer);
                Ok(())
            }
            Kind::Arg(_) => {
                // Each default is expanded after the ones before it on the same line.
                let Kind::Arg(decls) = &instruction.kind else {
                    return Ok(());
                };
                let mut items = Vec::new();
                for decl in decls {
                    let name = decl.name.clone();
                    let value = if let Some(given) = self.options.build_args.get(&name) {
                        self.used_args.insert(name.clone());
                        Some(given.clone())
                    } else if let Some(default) = &decl.default {
                        Some(self.expand_word(default, &state.env, span)?)
                    } else {
                        self.global_env.get_value(&name).map(str::to_owned)
                    };
                    if let Some(value) = &value {
                        state.set_env(&name, value);
                        items.push(format!("{name}={value}"));
                    } else {
                        items.push(name.clone());
                    }
                    if !state.args.contains(&name) {
                        state.args.push(name);
                    }
                }
                push_history(&mut state.image, format!("ARG {}", items.join(" ")), false);
                Ok(())
            }
            Kind::Env(pairs) => {
                for kv in pairs {
                    state.set_env(&kv.key, &kv.value);
                }
                self.metadata(state, &kind, instruction)
            }
            Kind::From(_) => Err(LowerError::at(span, "FROM cannot be used here")),
            _ => self.metadata(state, &kind, instruction),
        }
    }

    pub(super) fn metadata(
        &mut self,
        state: &mut StageState,
        kind: &Kind,
        instruction: &Instruction,
    ) -> Result<(), LowerError> {
        let history = meta::apply(
            &mut state.image,
            &mut state.meta,
            kind,
            &instruction.original,
        )
        .map_err(|e| LowerError::at(instruction.span, e.to_string()))?;
        if let Some(text) = history {
            push_history(&mut state.image, text, false);
        }
        Ok(())
    }
}
