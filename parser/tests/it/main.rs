//! Integration tests of kiln-parser, including the conformance suites in
//! `../shared/conformance` (skipped with a message when that folder is absent).

mod bounds;
mod dockerfile;
mod dockerignore;
mod lint;
mod shell;
