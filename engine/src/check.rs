//! The build checks (BuildKit's lint rules) for a request, with what the store knows of
//! its base images.

use std::collections::BTreeMap;

use kiln_image::config::ImageConfig;
use kiln_image::platform::Platform;
use kiln_parser::Dockerfile;
use kiln_parser::dockerignore::Matcher;
use kiln_parser::lint::{self, CheckOptions, Finding};
use kiln_snapshotter::Store;

/// What the store knows of the base images (nothing is pulled for a check): each one's
/// environment, so variables it defines are not reported as undefined, and the platform
/// of each one with layers, for `InvalidBaseImagePlatform`.
#[derive(Default)]
struct Bases {
    env: BTreeMap<String, Vec<String>>,
    platform: BTreeMap<String, String>,
}

fn bases(store: Option<&Store>, file: &Dockerfile) -> Bases {
    let mut out = Bases::default();
    let Some(store) = store else { return out };
    for stage in &file.stages {
        if let Ok((_, image)) = kiln_image::image::find_image(store, &stage.from.image) {
            let config = &image.config;
            if !image.manifest.layers.is_empty() {
                out.platform
                    .insert(stage.from.image.clone(), config_platform(config));
            }
            out.env
                .insert(stage.from.image.clone(), config.config.env.clone());
        }
    }
    out
}

/// `os/architecture[/variant]` of an image config.
pub(crate) fn config_platform(config: &ImageConfig) -> String {
    let mut platform = format!("{}/{}", config.os, config.architecture);
    if let Some(variant) = &config.variant {
        platform.push('/');
        platform.push_str(variant);
    }
    platform
}

/// Only the `InvalidBaseImagePlatform` findings, for base images resolved as a build
/// resolves them (`resolved`: the platform of each, by the name the `FROM` gives).
pub(crate) fn base_platform_findings(
    file: &Dockerfile,
    text: &str,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    platform: Option<&Platform>,
    resolved: BTreeMap<String, String>,
) -> Vec<Finding> {
    let options = CheckOptions {
        build_args: build_args.clone(),
        target: target.map(str::to_owned),
        platform: platform.map(Platform::to_string),
        image_platform: resolved,
        ..CheckOptions::default()
    };
    let mut found = lint::check(file, text, &options);
    found.retain(|f| f.rule == lint::INVALID_BASE_IMAGE_PLATFORM.name);
    found
}

/// The findings for a parsed Dockerfile, for a build targeting `platform` (`None`: the
/// host's).
pub fn findings(
    file: &Dockerfile,
    text: &str,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    platform: Option<&Platform>,
    ignore: Option<Matcher>,
    store: Option<&Store>,
) -> Vec<Finding> {
    let Bases {
        env,
        platform: image_platform,
    } = bases(store, file);
    let options = CheckOptions {
        build_args: build_args.clone(),
        target: target.map(str::to_owned),
        ignore,
        image_env: env,
        platform: platform.map(Platform::to_string),
        image_platform,
    };
    lint::check(file, text, &options)
}
