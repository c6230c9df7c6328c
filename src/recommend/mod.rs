//! The recommender: MovieLens ratings in, top-N unrated movies out. Pure and synchronous — no
//! Kafka, SQL or async — so that it can be unit-tested and benchmarked on its own.
//!
//! Contract: [`Recommender::recommend`] never returns a movie the user already rated, returns at
//! most `n` movies sorted by score descending with ties broken by movie id ascending, and is
//! deterministic: the same ratings give the same answer on every run and on every thread.
//!
//! Model: item-based collaborative filtering. Ratings are centred on each user's mean; the
//! similarity of two movies is the adjusted cosine over the users who rated both (at least
//! [`MIN_SUPPORT`] of them), shrunk by `n / (n + SHRINKAGE)` for `n` common users; each movie keeps its
//! [`NEIGHBOURS`] most similar movies with positive similarity. A candidate movie `i` is scored
//! for user `u` as `mean_u + Σ w(i,j)·(r_uj − mean_u) / (Σ |w(i,j)| + DAMPING)` over the
//! neighbours `j` of `i` that `u` rated, and only if at least [`MIN_CONTRIBUTORS`] of them did.
//! The damping term (not in the textbook formula) shrinks thinly supported predictions towards
//! the user's mean; without it, obscure movies with two neighbours rated 5 fill the top of every
//! list with a predicted 5.0.

mod data;
mod model;

use std::sync::Arc;

pub use data::{DataError, MOVIES_FILE, RATINGS_FILE, Ratings, USERS_FILE};
pub use model::{DAMPING, MIN_CONTRIBUTORS, MIN_SUPPORT, NEIGHBOURS, SHRINKAGE};

use crate::domain::{MovieId, UserId};
use model::Model;

/// One recommended movie. `score` is the predicted rating on the data's scale (1–5 for
/// MovieLens).
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub movie_id: MovieId,
    pub title: String,
    pub score: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    #[error("user {0} is unknown to the recommender (no ratings)")]
    UnknownUser(UserId),
}

/// What the worker asks of a recommender. [`Recommender`] is the one recq runs; the trait lets
/// tests wrap it (a recommender slowed down for one user, say) without touching the worker.
pub trait Recommend: Send + Sync {
    /// The top `n` movies `user` has not rated, best first.
    fn recommend(&self, user: UserId, n: usize) -> Result<Vec<Recommendation>, RecommendError>;
}

impl Recommend for Recommender {
    fn recommend(&self, user: UserId, n: usize) -> Result<Vec<Recommendation>, RecommendError> {
        Recommender::recommend(self, user, n)
    }
}

/// A built item-based model. Immutable, cheap to clone (shared internally) and `Send + Sync`,
/// so one instance can serve every worker task through an `Arc`.
#[derive(Debug, Clone)]
pub struct Recommender {
    model: Arc<Model>,
}

impl Recommender {
    /// Precomputes the item-item neighbour lists for `ratings`.
    pub fn build(ratings: &Ratings) -> Recommender {
        Recommender {
            model: Arc::new(Model::build(ratings)),
        }
    }

    /// The top `n` movies `user` has not rated, best first. Fewer than `n` (possibly none) when
    /// not enough movies have [`MIN_CONTRIBUTORS`] neighbours among the user's ratings.
    pub fn recommend(&self, user: UserId, n: usize) -> Result<Vec<Recommendation>, RecommendError> {
        let u = self
            .model
            .user_index(user)
            .ok_or(RecommendError::UnknownUser(user))?;
        Ok(self
            .model
            .top_n(u, n)
            .into_iter()
            .map(|(i, score)| Recommendation {
                movie_id: self.model.movies[i as usize],
                title: self.model.titles[i as usize].clone(),
                score,
            })
            .collect())
    }

    /// The users known to the model (those with at least one rating), ascending.
    pub fn user_ids(&self) -> Vec<UserId> {
        self.model.users.clone()
    }

    pub fn user_count(&self) -> usize {
        self.model.users.len()
    }

    /// The movies known to the model (those with at least one rating).
    pub fn movie_count(&self) -> usize {
        self.model.movies.len()
    }
}

#[cfg(test)]
mod tests;
