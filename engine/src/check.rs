//! The build checks (BuildKit's lint rules) for a request, with what is known of its base
//! images: for `kiln check`, the store's copies (nothing is pulled for a check); for a
//! build, the images its lowering resolved.

use std::collections::BTreeMap;

use kiln_image::config::ImageConfig;
use kiln_image::platform::Platform;
use kiln_parser::Dockerfile;
use kiln_parser::dockerignore::Matcher;
use kiln_parser::lint::{self, CheckOptions, Finding};
use kiln_snapshotter::Store;

/// What the checks use of one base image: its environment (variables it defines are not
/// `UndefinedVar`), its `SHELL` (shell-form `CMD` is then not `JSONArgsRecommended`) and,
/// when it has layers, its platform (`InvalidBaseImagePlatform`).
pub(crate) struct BaseFacts {
    env: Vec<String>,
    shell: Vec<String>,
    platform: Option<String>,
}

impl BaseFacts {
    pub(crate) fn of(config: &ImageConfig, has_layers: bool) -> BaseFacts {
        let platform = has_layers.then(|| {
            let mut platform = format!("{}/{}", config.os, config.architecture);
            if let Some(variant) = &config.variant {
                platform.push('/');
                platform.push_str(variant);
            }
            platform
        });
        BaseFacts {
            env: config.config.env.clone(),
            shell: config.config.shell.clone(),
            platform,
        }
    }
}

impl BaseFacts {
    /// The same, its platform unknown: a build checks only the platforms of the images
    /// it resolved.
    pub(crate) fn without_platform(self) -> BaseFacts {
        BaseFacts {
            platform: None,
            ..self
        }
    }
}

/// What a check is asked besides the Dockerfile.
pub(crate) struct Ask<'a> {
    pub(crate) build_args: &'a BTreeMap<String, String>,
    pub(crate) target: Option<&'a str>,
    /// The platform the build targets (`None`: the host's).
    pub(crate) platform: Option<&'a Platform>,
    pub(crate) ignore: Option<Matcher>,
}

impl Ask<'_> {
    fn options(self) -> CheckOptions {
        CheckOptions {
            build_args: self.build_args.clone(),
            target: self.target.map(str::to_owned),
            ignore: self.ignore,
            platform: self.platform.map(Platform::to_string),
            ..CheckOptions::default()
        }
    }
}

/// Whether a finding can change once the base images are known: their variables
/// (`UndefinedVar`), their `SHELL` (`JSONArgsRecommended`), their platform.
pub(crate) fn depends_on_bases(finding: &Finding) -> bool {
    [
        lint::UNDEFINED_VAR.name,
        lint::JSON_ARGS_RECOMMENDED.name,
        lint::INVALID_BASE_IMAGE_PLATFORM.name,
    ]
    .contains(&finding.rule)
}

/// The findings with `bases` known, keyed by the image name the `FROM` gives after
/// expansion.
pub(crate) fn findings_with(
    file: &Dockerfile,
    text: &str,
    ask: Ask<'_>,
    bases: BTreeMap<String, BaseFacts>,
) -> Vec<Finding> {
    let mut options = ask.options();
    for (name, facts) in bases {
        if let Some(platform) = facts.platform {
            options.image_platform.insert(name.clone(), platform);
        }
        if !facts.shell.is_empty() {
            options.image_shell.insert(name.clone(), facts.shell);
        }
        options.image_env.insert(name, facts.env);
    }
    lint::check(file, text, &options)
}

/// The findings for a parsed Dockerfile, for a build targeting `platform` (`None`: the
/// host's), with the store's copy of each base image standing for it.
pub fn findings(
    file: &Dockerfile,
    text: &str,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    platform: Option<&Platform>,
    ignore: Option<Matcher>,
    store: Option<&Store>,
) -> Vec<Finding> {
    let ask = Ask {
        build_args,
        target,
        platform,
        ignore,
    };
    let bases = store
        .map(|s| store_bases(file, &ask, s))
        .unwrap_or_default();
    findings_with(file, text, ask, bases)
}

/// The store's copy of each base image the stages name.
pub(crate) fn store_bases(
    file: &Dockerfile,
    ask: &Ask<'_>,
    store: &Store,
) -> BTreeMap<String, BaseFacts> {
    let probe = CheckOptions {
        build_args: ask.build_args.clone(),
        target: ask.target.map(str::to_owned),
        platform: ask.platform.map(Platform::to_string),
        ..CheckOptions::default()
    };
    let mut bases = BTreeMap::new();
    for name in lint::base_images(file, &probe) {
        if let Ok((_, image)) = kiln_image::image::find_image(store, &name) {
            let facts = BaseFacts::of(&image.config, !image.manifest.layers.is_empty());
            bases.insert(name, facts);
        }
    }
    bases
}
