//! Runs one process in fresh Linux namespaces on a prepared rootfs.
//!
//! All of kiln's `unsafe` code lives in this crate, in `sys/`.

pub mod helper;
