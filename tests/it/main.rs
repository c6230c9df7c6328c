//! Integration tests: real broker, real Postgres, a fresh database and random names per test.

mod common;
mod pipeline;
mod projector;
