//! Dockerfile AST + build options -> build graph, cache keys, the scheduler and the
//! operations.
//!
//! The parts, in the order a build uses them:
//! - [`graph`]: a DAG of vertices (an operation plus its inputs), merged when identical.
//! - [`cache_key`]: each vertex's [`cache_key::CacheKey`], built from the op, its inputs'
//!   keys and the content it reads; the parts are kept to explain a cache miss.
//! - [`cache_index`]: the persistent map from keys to results, and the stat memo that
//!   spares re-reading unchanged context files.
//! - [`cache_transfer`]: `--cache-to` / `--cache-from`: steps' results as a cache another
//!   store can take them from (kiln's cache record in an OCI layout).
//! - [`scheduler`]: runs the vertices a target needs, in parallel, cancelling on failure.
//! - [`in_flight`]: the keys being solved now, so concurrent builds of one engine run a
//!   shared vertex once.
//! - [`progress`]: the events a front end renders.
//!
//! The solver never prints, never mounts and never forks: it calls the snapshotter and
//! the sandbox for that, and reports through [`progress::Progress`].
#![forbid(unsafe_code)]

pub mod cache_index;
pub mod cache_key;
pub mod cache_transfer;
pub mod cancel;
pub mod context;
pub mod explain;
pub mod frontend;
pub mod graph;
pub mod in_flight;
pub mod input_file;
pub mod layered_view;
pub mod meta;
pub mod ops;
pub mod progress;
pub mod request;
pub mod scheduler;
pub mod solve;
pub mod ssh_agent;
pub mod ssh_forward;
