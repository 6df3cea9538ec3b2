//! Integration tests of the store against real filesystems: overlayfs as root, the native
//! snapshotter everywhere, hostile archives.

mod hostile;
mod kept_context;
mod layers;
mod support;
