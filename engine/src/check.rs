//! The build checks (BuildKit's lint rules) for a request, with what the store knows of
//! its base images.

use std::collections::BTreeMap;

use kiln_parser::Dockerfile;
use kiln_parser::dockerignore::Matcher;
use kiln_parser::lint::{self, CheckOptions, Finding};
use kiln_snapshotter::Store;

/// The environment of each base image the store has, so variables it defines are not
/// reported as undefined (nothing is pulled for a check).
fn image_env(store: Option<&Store>, file: &Dockerfile) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let Some(store) = store else { return out };
    for stage in &file.stages {
        if let Ok((_, image)) = kiln_image::image::find_image(store, &stage.from.image) {
            out.insert(stage.from.image.clone(), image.config.config.env.clone());
        }
    }
    out
}

/// The findings for a parsed Dockerfile.
pub fn findings(
    file: &Dockerfile,
    text: &str,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    ignore: Option<Matcher>,
    store: Option<&Store>,
) -> Vec<Finding> {
    let options = CheckOptions {
        build_args: build_args.clone(),
        target: target.map(str::to_owned),
        ignore,
        image_env: image_env(store, file),
    };
    lint::check(file, text, &options)
}
