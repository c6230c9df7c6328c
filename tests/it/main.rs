//! Integration tests: real broker, real Postgres, a fresh database and random names per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pipeline;
mod projector;
mod registry;
