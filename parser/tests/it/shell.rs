//! shell tests.
