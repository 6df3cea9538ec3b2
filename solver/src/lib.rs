//! Dockerfile AST + build options -> build graph, cache keys, the scheduler and the operations.
#![forbid(unsafe_code)]
