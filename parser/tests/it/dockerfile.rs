//! dockerfile tests.
