//! `.dockerignore` patterns and matching with BuildKit semantics.
