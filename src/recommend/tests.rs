// Tests may panic on a broken precondition; that is what a failing test is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use super::*;

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn movie(id: i64) -> MovieId {
    MovieId::new(id).unwrap()
}

fn small() -> Ratings {
    Ratings::generated(60, 40, 15, 7)
}

/// Where `make data` installs MovieLens 100k (overridable for other machines).
fn movielens_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RECQ_DATA_DIR") {
        return PathBuf::from(dir);
    }
    crate::config::default_data_dir()
}

fn rated_by(ratings: &Ratings, u: UserId) -> HashSet<MovieId> {
    ratings
        .triples()
        .iter()
        .filter(|t| t.0 == u)
        .map(|t| t.1)
        .collect()
}

#[test]
fn recommendations_exclude_already_rated_movies() {
    let ratings = small();
    let model = Recommender::build(&ratings);
    let mut total = 0;
    for u in model.user_ids() {
        let seen = rated_by(&ratings, u);
        let recs = model.recommend(u, 10).unwrap();
        total += recs.len();
        for r in recs {
            assert!(
                !seen.contains(&r.movie_id),
                "user {u} already rated {}",
                r.movie_id
            );
            assert_eq!(r.title, format!("Movie {}", r.movie_id));
        }
    }
    assert!(
        total > 0,
        "the generated set should produce some recommendations"
    );
}

#[test]
fn top_n_is_deterministic_and_sorted() {
    let ratings = small();
    let a = Recommender::build(&ratings);
    let b = Recommender::build(&ratings);
    let u = user(3);
    let first = a.recommend(u, 10).unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first, b.recommend(u, 10).unwrap());
    let shared = a.clone();
    let from_thread = std::thread::spawn(move || shared.recommend(u, 10).unwrap())
        .join()
        .unwrap();
    assert_eq!(first, from_thread);
    for pair in first.windows(2) {
        let (x, y) = (&pair[0], &pair[1]);
        assert!(
            x.score > y.score || (x.score == y.score && x.movie_id < y.movie_id),
            "{x:?} before {y:?}"
        );
    }
    // A shorter list is a prefix of a longer one.
    assert_eq!(a.recommend(u, 4).unwrap(), first[..4].to_vec());
    assert!(a.recommend(u, 0).unwrap().is_empty());
}

#[test]
fn ties_are_broken_by_movie_id_ascending() {
    // Users 1..=4 like movies 1-4 and dislike movie 9, or the other way round, so movies 3 and
    // 4 (rated identically) are equally similar to movies 1 and 2 and tie for user 5.
    let mut triples = Vec::new();
    for u in 1..=4 {
        let taste = if u % 2 == 1 { 1.5 } else { -1.5 };
        for m in [1, 2, 3, 4] {
            let nudge = if m == 2 && u == 1 { -0.5 } else { 0.0 };
            triples.push((user(u), movie(m), 3.0 + taste + nudge));
        }
        triples.push((user(u), movie(9), 3.0 - taste));
    }
    triples.push((user(5), movie(1), 5.0));
    triples.push((user(5), movie(2), 4.0));
    let model = Recommender::build(&Ratings::from_triples(triples, HashMap::new()));
    let recs = model.recommend(user(5), 10).unwrap();
    let ids: Vec<i32> = recs.iter().map(|r| r.movie_id.get()).collect();
    assert_eq!(ids, vec![3, 4], "{recs:?}");
    assert_eq!(recs[0].score, recs[1].score);
    assert_eq!(
        recs[0].title, "Movie 3",
        "a movie without a title gets a placeholder"
    );
}

#[test]
fn an_unknown_user_is_an_error() {
    let model = Recommender::build(&small());
    let err = model.recommend(user(9_999), 5).unwrap_err();
    assert!(matches!(err, RecommendError::UnknownUser(u) if u == user(9_999)));
    assert_eq!(
        err.to_string(),
        "user 9999 is unknown to the recommender (no ratings)"
    );
}

#[test]
fn a_user_who_rated_nothing_similar_gets_fewer_results() {
    let mut ratings = small().triples().to_vec();
    // Movie 500 is rated only by user 500, so it has no neighbours and user 500 no candidates.
    ratings.push((user(500), movie(500), 4.0));
    let model = Recommender::build(&Ratings::from_triples(ratings, HashMap::new()));
    assert_eq!(model.recommend(user(500), 10).unwrap(), Vec::new());
    // A user who rated everything has nothing left to recommend.
    let everything: Vec<_> = (1..=5)
        .flat_map(|u| (1..=5).map(move |m| (user(u), movie(m), ((u * m) % 5 + 1) as f32)))
        .collect();
    let model = Recommender::build(&Ratings::from_triples(everything, HashMap::new()));
    assert!(model.recommend(user(1), 10).unwrap().is_empty());
}

#[test]
fn item_similarity_is_symmetric_and_identical_items_have_similarity_one() {
    let mut triples = small().triples().to_vec();
    // Movies 101 and 102 are rated identically by users 1..=30.
    for u in 1..=30 {
        let r = ((u * 7) % 5 + 1) as f32;
        triples.push((user(u), movie(101), r));
        triples.push((user(u), movie(102), r));
    }
    let model = model::Model::build(&Ratings::from_triples(triples, HashMap::new()));
    let (sim, support) = model.similarity(movie(101), movie(102)).unwrap();
    assert!((sim - 1.0).abs() < 1e-9, "{sim}");
    assert_eq!(support, 30);
    let w = model.neighbour_weight(movie(101), movie(102)).unwrap();
    let shrunk = 30.0 / (30.0 + 25.0);
    assert!((f64::from(w) - shrunk).abs() < 1e-6, "{w}");
    for a in 1..=40 {
        for b in 1..=40 {
            assert_eq!(
                model.similarity(movie(a), movie(b)),
                model.similarity(movie(b), movie(a))
            );
            // Top-K truncation may keep a pair in one direction only, never with two weights.
            if let (Some(x), Some(y)) = (
                model.neighbour_weight(movie(a), movie(b)),
                model.neighbour_weight(movie(b), movie(a)),
            ) {
                assert_eq!(x, y);
            }
            // The fast all-pairs pass agrees with the pairwise reference definition.
            if let Some(w) = model.neighbour_weight(movie(a), movie(b)) {
                let (sim, n) = model.similarity(movie(a), movie(b)).unwrap();
                let expected = sim * f64::from(n) / (f64::from(n) + SHRINKAGE);
                assert!(
                    (f64::from(w) - expected).abs() < 1e-6,
                    "{a}-{b}: {w} vs {expected}"
                );
                assert!(n >= MIN_SUPPORT && w > 0.0);
            }
        }
    }
    // Movies in the same taste group are more alike than movies in different groups.
    let same = model.similarity(movie(4), movie(8)).unwrap().0;
    let different = model.similarity(movie(4), movie(5)).unwrap().0;
    assert!(same > different, "{same} <= {different}");
}

#[test]
fn a_repeated_rating_keeps_the_last_value() {
    let triples = vec![
        (user(1), movie(1), 1.0),
        (user(1), movie(1), 5.0),
        (user(1), movie(2), 3.0),
    ];
    let model = model::Model::build(&Ratings::from_triples(triples, HashMap::new()));
    assert_eq!(model.users.len(), 1);
    assert_eq!(model.movies.len(), 2);
}

#[test]
fn generated_ratings_are_deterministic_per_seed() {
    let a = Ratings::generated(20, 30, 10, 1);
    assert_eq!(a.len(), 200);
    assert_eq!(a.triples(), Ratings::generated(20, 30, 10, 1).triples());
    assert_ne!(a.triples(), Ratings::generated(20, 30, 10, 2).triples());
    for u in 1..=20 {
        assert_eq!(
            rated_by(&a, user(u)).len(),
            10,
            "user {u} rates distinct movies"
        );
    }
    assert_eq!(
        Ratings::generated(2, 5, 50, 0).len(),
        10,
        "per_user is clamped"
    );
    assert_eq!(a.title(movie(17)), Some("Movie 17"));
}

#[test]
fn loading_a_missing_file_names_the_file_and_says_make_data() {
    let dir = std::env::temp_dir().join("recq-no-such-movielens-dir");
    let err = Ratings::load_movielens(&dir).unwrap_err();
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(RATINGS_FILE), "{message}");
    assert!(message.contains("run `make data`"), "{message}");
}

#[test]
fn a_missing_column_is_named_with_the_file() {
    // The users file has no rating column: point the ratings reader at it.
    let dir = std::env::temp_dir().join(format!("recq-bad-movielens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(RATINGS_FILE);
    let _ = std::fs::remove_file(&link);
    std::fs::copy(movielens_dir().join(USERS_FILE), &link).unwrap();
    let err = Ratings::load_movielens(&dir).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    let message = err.to_string();
    assert!(matches!(err, DataError::MissingColumn { .. }), "{err:?}");
    assert!(
        message.contains(RATINGS_FILE) && message.contains("movie_id"),
        "{message}"
    );
}

/// Fails, rather than skips, without the data: `make data` runs before the tests.
#[test]
fn the_real_movielens_data_loads_and_recommends() {
    let started = Instant::now();
    let ratings = Ratings::load_movielens(&movielens_dir()).unwrap();
    let loaded = started.elapsed();
    assert_eq!(ratings.len(), 100_000);
    let started = Instant::now();
    let model = Recommender::build(&ratings);
    let built = started.elapsed();
    assert_eq!(model.user_count(), 943);
    assert_eq!(model.movie_count(), 1682);
    assert_eq!(model.user_ids().len(), 943);
    assert!(model.user_ids().windows(2).all(|w| w[0] < w[1]));

    let u = user(1);
    let seen = rated_by(&ratings, u);
    let recs = model.recommend(u, 10).unwrap();
    assert_eq!(recs.len(), 10, "{recs:?}");
    for r in &recs {
        assert!(!seen.contains(&r.movie_id), "{r:?} was already rated");
        assert!(!r.title.trim().is_empty(), "{r:?} has no title");
        assert!(
            (1.0..=5.0).contains(&r.score),
            "{r:?} is off the rating scale"
        );
    }
    assert_eq!(recs, model.recommend(u, 10).unwrap());

    // Timing is printed, not asserted: `make bench` measures it properly.
    let mut latencies: Vec<_> = model
        .user_ids()
        .into_iter()
        .map(|u| {
            let t = Instant::now();
            let recs = model.recommend(u, 10).unwrap();
            (t.elapsed(), recs.len())
        })
        .collect();
    let short = latencies.iter().filter(|l| l.1 < 10).count();
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() - 1) * p / 100].0;
    println!(
        "movielens: load {loaded:?}, build {built:?}, recommend p50 {:?} p99 {:?} max {:?}, \
         {short} users with fewer than 10; user 1 top 3: {:?}",
        pct(50),
        pct(99),
        pct(100),
        &recs[..3]
    );
    for r in &recs {
        println!("  {} {:.3} {}", r.movie_id, r.score, r.title);
    }
}

#[test]
fn the_recommender_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Recommender>();
    assert_send_sync::<Ratings>();
}
