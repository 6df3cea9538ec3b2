//! Dockerfile text -> typed AST with spans; the shell-word expander; `.dockerignore` matching.
//!
//! Pure: no I/O beyond the text it is given.
#![forbid(unsafe_code)]

pub mod dockerignore;
pub mod shell;
