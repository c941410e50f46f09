//! The one integration-test binary (one link step instead of one per file).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Helpers are shared by every test file; not each file uses each helper.
#[allow(dead_code)]
mod support;

mod cli;
mod listeners;
mod migrations;
mod store;
