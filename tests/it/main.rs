//! Integration tests: real broker, real Postgres, a fresh database and random names per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod chaos;
mod common;
mod consistency;
mod fuzz;
mod operator;
mod outages;
mod pipeline;
mod poison;
mod projector;
mod recovery;
mod registry;
mod scenarios;
mod security;
