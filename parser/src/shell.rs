//! Shell-word expansion for build-time substitution, as BuildKit does it.
