//! Figure 7: the recommender in-process — loading MovieLens 100k and building the model, then
//! top-10 for every user.

use std::path::Path;
use std::time::Instant;

use super::{BenchError, percentile};
use crate::recommend::{Ratings, Recommender};

pub struct RecommenderRun {
    pub load_ms: f64,
    pub build_ms: f64,
    pub users: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

/// Runs on the calling thread (call it from `spawn_blocking`).
pub fn measure(data_dir: &Path, top_n: usize) -> Result<RecommenderRun, BenchError> {
    let started = Instant::now();
    let ratings = Ratings::load_movielens(data_dir).map_err(crate::app::AppError::from)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let built = Instant::now();
    let model = Recommender::build(&ratings);
    let build_ms = built.elapsed().as_secs_f64() * 1e3;
    let users = model.user_ids();
    let mut per_user = Vec::with_capacity(users.len());
    for user in &users {
        let t = Instant::now();
        let list = model.recommend(*user, top_n)?;
        per_user.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(list);
    }
    Ok(RecommenderRun {
        load_ms,
        build_ms,
        users: users.len(),
        p50_ms: percentile(&per_user, 0.5),
        p99_ms: percentile(&per_user, 0.99),
        mean_ms: per_user.iter().sum::<f64>() / per_user.len().max(1) as f64,
    })
}
