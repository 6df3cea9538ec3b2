//! The OCI image's own types, shared by every crate that makes or reads an image: the
//! solver (which writes each stage's config and the final image), the exporter (archives
//! and registries) and the engine. Plain data and the two store operations that give an
//! image its place in the local store; nothing here moves bytes over a network or into
//! an archive.
//!
//! - [`config`]: the image config document in Docker's field names, and the history.
//! - [`image`]: writing an image (config + manifest blobs) into the store and reading it
//!   back by name or id.
//! - [`platform`]: `os/arch[/variant]` and how well an index entry fits one.
//! - [`file`]: the one way a file the user named is written (temp, fsync, rename).
//!
//! Digests and descriptors are the store's (`kiln_snapshotter::{Digest, Descriptor}`):
//! one content address for the whole of kiln.
#![forbid(unsafe_code)]

pub mod config;
pub mod file;
pub mod image;
pub mod platform;
