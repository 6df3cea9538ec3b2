//! kiln's on-disk store: content-addressed blobs, snapshots, overlay mounts and layer tars.
#![forbid(unsafe_code)]
