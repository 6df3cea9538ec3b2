//! Image assembly (config, history, manifest, index) and outputs: the local store,
//! OCI and Docker archives, a local directory, a registry.
//!
//! - [`archive`]: outputs to files and directories (`type=oci`, `docker`, `local`,
//!   `tar`), streamed and deterministic.
//! - [`config`], [`image`]: re-exported from `kiln-image`, which owns the image's types.
//! - [`registry`]: push and pull over the OCI distribution protocol.
//! - [`transfer`]: images between the local store and a registry.
#![forbid(unsafe_code)]

pub mod archive;
pub mod registry;
pub mod transfer;
