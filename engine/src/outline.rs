//! `--call=outline` and `--call=targets` for a request: the Dockerfile read as a build
//! reads it, the analysis itself in [`kiln_parser::outline`] (pure), with the store's copy
//! of each base image for the environment a stage's `ARG` defaults see (nothing is
//! pulled, as for `kiln check`).

use std::collections::BTreeMap;

use kiln_parser::lint::{self, CheckOptions};
use kiln_parser::outline::{self, Outline, OutlineOptions, Target};

use crate::Engine;
use crate::build::DockerfileText;
use crate::error::BuildError;
use crate::request::BuildRequest;

impl Engine {
    /// The build args, secrets and ssh ids the request's target uses.
    pub async fn outline(
        &self,
        request: BuildRequest,
    ) -> Result<(Outline, DockerfileText), BuildError> {
        let prepared = self
            .prepare(
                request.context,
                &request.dockerfile,
                request.dockerignore.as_deref(),
            )
            .await?;
        let platform = request.platform.as_ref().map(ToString::to_string);
        let probe = CheckOptions {
            build_args: request.build_args.clone(),
            target: request.target.clone(),
            platform: platform.clone(),
            ..CheckOptions::default()
        };
        let mut image_env = BTreeMap::new();
        for name in lint::base_images(&prepared.parsed, &probe) {
            if let Ok((_, image)) = kiln_image::image::find_image(self.store(), &name) {
                image_env.insert(name, image.config.config.env.clone());
            }
        }
        let options = OutlineOptions {
            build_args: request.build_args,
            target: request.target,
            platform,
            image_env,
        };
        let file = prepared.dockerfile;
        let found = outline::outline(&prepared.parsed, &file.text, &options).map_err(|e| {
            BuildError::Dockerfile {
                rendered: e.render(&file.name, &file.text),
            }
        })?;
        Ok((found, file))
    }

    /// Every stage of the request's Dockerfile, the default one marked.
    pub async fn targets(
        &self,
        request: BuildRequest,
    ) -> Result<(Vec<Target>, DockerfileText), BuildError> {
        let prepared = self
            .prepare(
                request.context,
                &request.dockerfile,
                request.dockerignore.as_deref(),
            )
            .await?;
        let file = prepared.dockerfile;
        Ok((outline::targets(&prepared.parsed, &file.text), file))
    }
}
