//! Item-based collaborative filtering over dense indices.
//!
//! Users and movies are mapped to dense indices in ascending id order, so "index ascending" is
//! "id ascending" and every loop runs in a fixed order: the same ratings give bit-identical
//! neighbour lists and scores on every run and on every thread. No hash map is iterated.

use std::time::Instant;

use crate::domain::{MovieId, UserId};

use super::Ratings;

/// Neighbours kept per item.
pub const NEIGHBOURS: usize = 50;
/// Users two items must share before their similarity is trusted at all.
pub const MIN_SUPPORT: u32 = 3;
/// Shrinkage: a similarity over `n` common users is weighted by `n / (n + SHRINKAGE)`, so that a
/// perfect correlation over 3 users does not outrank a strong one over 100.
pub const SHRINKAGE: f64 = 25.0;
/// Added to the denominator of a prediction: pulls a prediction backed by little similarity
/// weight towards the user's mean, so that a movie with two weak neighbours the user loved does
/// not outrank one with forty strong neighbours the user liked.
pub const DAMPING: f64 = 1.0;
/// Neighbours of a candidate the user must have rated before it is scored at all.
pub const MIN_CONTRIBUTORS: u32 = 2;

/// Ratings in compressed-sparse-row form: row `r` holds `cols[offsets[r]..offsets[r + 1]]`,
/// columns ascending, with one value each.
#[derive(Debug, Clone, Default)]
pub(crate) struct Csr {
    offsets: Vec<u32>,
    cols: Vec<u32>,
    vals: Vec<f32>,
}

impl Csr {
    /// Builds from (row, col, value) entries sorted by (row, col) without duplicates.
    fn from_sorted(rows: usize, entries: impl Iterator<Item = (u32, u32, f32)>) -> Csr {
        let mut csr = Csr {
            offsets: vec![0; rows + 1],
            ..Csr::default()
        };
        for (row, col, val) in entries {
            csr.offsets[row as usize + 1] += 1;
            csr.cols.push(col);
            csr.vals.push(val);
        }
        for r in 0..rows {
            csr.offsets[r + 1] += csr.offsets[r];
        }
        csr
    }

    fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let range = self.offsets[r] as usize..self.offsets[r + 1] as usize;
        (&self.cols[range.clone()], &self.vals[range])
    }
}

/// The built model. Immutable after [`Model::build`], hence `Send + Sync`.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    pub(crate) users: Vec<UserId>,
    pub(crate) movies: Vec<MovieId>,
    pub(crate) titles: Vec<String>,
    /// user -> (item, raw rating), items ascending.
    by_user: Csr,
    user_mean: Vec<f32>,
    /// item j -> (item i, weight of j as a neighbour of i): the transpose of the neighbour lists,
    /// so that scoring walks only the items a user rated.
    reverse: Csr,
}

impl Model {
    pub(crate) fn build(ratings: &Ratings) -> Model {
        let started = Instant::now();
        // Later triples win for a repeated (user, movie); non-finite ratings are ignored.
        let mut triples: Vec<(UserId, MovieId, f32)> = ratings
            .triples()
            .iter()
            .copied()
            .filter(|t| t.2.is_finite())
            .collect();
        let mut users: Vec<UserId> = triples.iter().map(|t| t.0).collect();
        users.sort_unstable();
        users.dedup();
        let mut movies: Vec<MovieId> = triples.iter().map(|t| t.1).collect();
        movies.sort_unstable();
        movies.dedup();
        let titles = movies
            .iter()
            .map(|m| match ratings.title(*m) {
                Some(t) if !t.is_empty() => t.to_owned(),
                _ => format!("Movie {m}"),
            })
            .collect();

        // Stable sort keeps load order among duplicates; keep the last of each run.
        triples.sort_by_key(|t| (t.0, t.1));
        let mut entries: Vec<(u32, u32, f32)> = Vec::with_capacity(triples.len());
        for (user, movie, rating) in triples {
            let u = dense(&users, user);
            let m = dense(&movies, movie);
            match entries.last_mut() {
                Some(last) if last.0 == u && last.1 == m => last.2 = rating,
                _ => entries.push((u, m, rating)),
            }
        }
        let by_user = Csr::from_sorted(users.len(), entries.iter().copied());
        let user_mean: Vec<f32> = (0..users.len())
            .map(|u| {
                let (_, vals) = by_user.row(u);
                let sum: f64 = vals.iter().map(|&v| f64::from(v)).sum();
                (sum / vals.len().max(1) as f64) as f32
            })
            .collect();
        entries.sort_by_key(|e| (e.1, e.0));
        let by_item = Csr::from_sorted(
            movies.len(),
            entries
                .iter()
                .map(|&(u, m, r)| (m, u, r - user_mean[u as usize])),
        );

        let mut reverse_entries: Vec<(u32, u32, f32)> = Vec::new();
        let mut scratch = Scratch::new(movies.len());
        for i in 0..movies.len() {
            for (j, w) in neighbours(&by_user, &by_item, &user_mean, i, &mut scratch) {
                reverse_entries.push((j, i as u32, w));
            }
        }
        reverse_entries.sort_by_key(|e| (e.0, e.1));
        let reverse = Csr::from_sorted(movies.len(), reverse_entries.into_iter());

        tracing::debug!(
            users = users.len(),
            movies = movies.len(),
            ratings = by_user.cols.len(),
            neighbour_links = reverse.cols.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recommender model built"
        );
        Model {
            users,
            movies,
            titles,
            by_user,
            user_mean,
            reverse,
        }
    }

    /// Top `n` unrated items for dense user `u` as (item, predicted rating), best first, ties by
    /// item ascending.
    pub(crate) fn top_n(&self, u: usize, n: usize) -> Vec<(u32, f64)> {
        let items = self.movies.len();
        let mean = f64::from(self.user_mean[u]);
        let mut num = vec![0.0f64; items];
        let mut den = vec![0.0f64; items];
        let mut contributors = vec![0u32; items];
        let mut rated = vec![false; items];
        let (rated_items, ratings) = self.by_user.row(u);
        for (&j, &r) in rated_items.iter().zip(ratings) {
            rated[j as usize] = true;
            let centred = f64::from(r) - mean;
            let (targets, weights) = self.reverse.row(j as usize);
            for (&i, &w) in targets.iter().zip(weights) {
                let i = i as usize;
                num[i] += f64::from(w) * centred;
                den[i] += f64::from(w).abs();
                contributors[i] += 1;
            }
        }
        let mut candidates: Vec<(u32, f64)> = (0..items)
            .filter(|&i| !rated[i] && contributors[i] >= MIN_CONTRIBUTORS && den[i] > 0.0)
            .map(|i| (i as u32, mean + num[i] / (den[i] + DAMPING)))
            .collect();
        let order = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if n == 0 {
            return Vec::new();
        }
        if candidates.len() > n {
            candidates.select_nth_unstable_by(n - 1, order);
            candidates.truncate(n);
        }
        candidates.sort_unstable_by(order);
        candidates
    }

    /// Dense index of `user`, if the model knows them.
    pub(crate) fn user_index(&self, user: UserId) -> Option<usize> {
        self.users.binary_search(&user).ok()
    }

    /// Unshrunk adjusted cosine similarity of two movies over the users who rated both, and
    /// that number of users; `None` if either movie is unknown or the similarity is undefined.
    #[cfg(test)]
    pub(crate) fn similarity(&self, a: MovieId, b: MovieId) -> Option<(f64, u32)> {
        let a = self.movies.binary_search(&a).ok()? as u32;
        let b = self.movies.binary_search(&b).ok()? as u32;
        let (mut dot, mut na, mut nb, mut n) = (0.0f64, 0.0f64, 0.0f64, 0u32);
        for u in 0..self.users.len() {
            let (items, raw) = self.by_user.row(u);
            if let (Ok(x), Ok(y)) = (items.binary_search(&a), items.binary_search(&b)) {
                let p = f64::from(raw[x] - self.user_mean[u]);
                let q = f64::from(raw[y] - self.user_mean[u]);
                dot += p * q;
                na += p * p;
                nb += q * q;
                n += 1;
            }
        }
        let norm = (na * nb).sqrt();
        (norm > 0.0).then(|| (dot / norm, n))
    }

    /// The stored neighbour weight of `b` for `a` (shrunk), if `b` is among `a`'s neighbours.
    #[cfg(test)]
    pub(crate) fn neighbour_weight(&self, a: MovieId, b: MovieId) -> Option<f32> {
        let a = self.movies.binary_search(&a).ok()? as u32;
        let b = self.movies.binary_search(&b).ok()?;
        let (targets, weights) = self.reverse.row(b);
        let pos = targets.binary_search(&a).ok()?;
        Some(weights[pos])
    }
}

/// Per-item accumulators reused across items; only touched slots are reset.
struct Scratch {
    dot: Vec<f64>,
    norm_i: Vec<f64>,
    norm_j: Vec<f64>,
    support: Vec<u32>,
    touched: Vec<u32>,
}

impl Scratch {
    fn new(items: usize) -> Scratch {
        Scratch {
            dot: vec![0.0; items],
            norm_i: vec![0.0; items],
            norm_j: vec![0.0; items],
            support: vec![0; items],
            touched: Vec::new(),
        }
    }
}

/// The top [`NEIGHBOURS`] items most similar to item `i`, as (item, shrunk weight), positive
/// weights only, with at least [`MIN_SUPPORT`] common users. Adjusted cosine: each rating is
/// centred on its user's mean and the norms run over the common users only (Sarwar et al. 2001),
/// so two items rated identically by everyone who rated both have similarity 1.
fn neighbours(
    by_user: &Csr,
    by_item: &Csr,
    user_mean: &[f32],
    i: usize,
    s: &mut Scratch,
) -> Vec<(u32, f32)> {
    let (raters, centred_i) = by_item.row(i);
    for (&u, &ci) in raters.iter().zip(centred_i) {
        let ci = f64::from(ci);
        let mean = user_mean[u as usize];
        let (items, raw) = by_user.row(u as usize);
        for (&j, &r) in items.iter().zip(raw) {
            let j = j as usize;
            if j == i {
                continue;
            }
            // The same f32 arithmetic as `by_item`, so that sim(i, j) == sim(j, i) bit for bit.
            let cj = f64::from(r - mean);
            if s.support[j] == 0 {
                s.touched.push(j as u32);
            }
            s.dot[j] += ci * cj;
            s.norm_i[j] += ci * ci;
            s.norm_j[j] += cj * cj;
            s.support[j] += 1;
        }
    }
    let mut found: Vec<(u32, f32)> = Vec::new();
    for &j in &s.touched {
        let j = j as usize;
        let n = s.support[j];
        let norm = (s.norm_i[j] * s.norm_j[j]).sqrt();
        if n >= MIN_SUPPORT && norm > 0.0 {
            let weight = s.dot[j] / norm * f64::from(n) / (f64::from(n) + SHRINKAGE);
            if weight > 0.0 {
                found.push((j as u32, weight as f32));
            }
        }
        s.dot[j] = 0.0;
        s.norm_i[j] = 0.0;
        s.norm_j[j] = 0.0;
        s.support[j] = 0;
    }
    s.touched.clear();
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if found.len() > NEIGHBOURS {
        found.select_nth_unstable_by(NEIGHBOURS - 1, order);
        found.truncate(NEIGHBOURS);
    }
    found.sort_unstable_by(order);
    found
}

fn dense<T: Ord>(sorted: &[T], id: T) -> u32 {
    sorted.binary_search(&id).unwrap_or(0) as u32
}
