//! Image assembly (config, history, manifest, index) and outputs: the local store,
//! OCI and Docker archives, a local directory, a registry.
#![forbid(unsafe_code)]

pub mod registry;
