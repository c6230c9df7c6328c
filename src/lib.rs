//! recq: movie-recommendation jobs tracked through Kafka and projected into Postgres.
//!
//! The log is the source of truth; the `recommendation_queues` table is a projection of it.
//! `domain` is pure; `kafka` and `db` are adapters that never import each other; `worker`,
//! `projector`, `verify` and `app` are where they meet.

pub mod app;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod harness;
pub mod kafka;
pub mod metrics;
pub mod projector;
pub mod rebuild;
pub mod recommend;
pub mod registry;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
pub mod verify;
pub mod worker;
