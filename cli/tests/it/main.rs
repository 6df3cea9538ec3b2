//! Integration tests of the `kiln` binary: one test binary, one module per topic.

mod build;
mod build_checks;
mod build_features;
mod build_topics;
mod buildah_corpus;
mod cache_transfer;
mod call;
mod explain;
mod faults;
mod feedback;
mod parse;

mod registry;
mod run;
mod sandbox;
mod security_bounds;
mod security_sandbox;
mod security_store;
mod serve;
mod snapshots;
mod store;
mod support;
mod watch;
