//! dockerignore tests.
