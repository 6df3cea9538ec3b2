//! Image assembly (config, history, manifest, index) and outputs: the local store,
//! OCI and Docker archives, a local directory, a registry.
//!
//! - [`archive`]: outputs to files and directories (`type=oci`, `docker`, `local`,
//!   `tar`), streamed and deterministic.
//! - [`config`]: the image config document in Docker's field names.
//! - [`image`]: writing an image (config + manifest blobs) into the store and reading it
//!   back by name or id.
//! - [`registry`]: push and pull over the OCI distribution protocol.
//! - [`transfer`]: images between the local store and a registry.
#![forbid(unsafe_code)]

pub mod archive;
pub mod config;
pub mod image;
pub mod registry;
pub mod transfer;
