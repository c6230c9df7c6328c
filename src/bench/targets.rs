//! The targets, judged on the medians, and where the results came from.

use super::report::{Figures, Target, human, target};

pub fn targets(f: &Figures) -> Vec<Target> {
    let ratio = |a: &str, b: &str| f.median(a).zip(f.median(b)).map(|(a, b)| a / b);
    let recommender = f.median("recommender_p50_ms");
    let recommender_mean = f.median("recommender_mean_ms");
    let rss = [
        f.median("rss_worker_6"),
        f.median("rss_projector_4"),
        f.median("rss_projector_6"),
    ];
    let max_rss = rss.iter().flatten().copied().reduce(f64::max);
    vec![
        target(
            "projector (1) ≥ 25× the seed's way (2)",
            ratio("projector_apply", "seed_way"),
            25.0,
            false,
            |v| format!("(1)/(2) = {v:.1}×"),
        ),
        target(
            "projector (1) ≥ 0.5× the COPY ceiling (3)",
            ratio("projector_apply", "copy_ceiling"),
            0.5,
            false,
            |v| format!("(1)/(3) = {v:.2}×"),
        ),
        target(
            "rebuild from memory (5) ≥ 100,000 events/s",
            f.median("rebuild_from_memory"),
            100_000.0,
            false,
            |v| format!("{} events/s", human(v)),
        ),
        target(
            "rebuild through the broker within 2× of (4)",
            ratio("rebuild_through_broker", "broker_projector"),
            0.5,
            false,
            |v| format!("(5b)/(4b) = {v:.2}×"),
        ),
        target(
            "end to end (6): p99 < 250 ms at 200 requests/s",
            f.median("e2e_p99_ms"),
            250.0,
            true,
            |v| format!("p99 {v:.0} ms"),
        ),
        target(
            "recommender (7): p50 < 5 ms per user",
            recommender,
            5.0,
            true,
            |v| format!("p50 {v:.2} ms"),
        ),
        target(
            "worker overhead beyond the recommender < 1 ms/job (CPU)",
            f.median("worker_cpu_ms_per_job")
                .zip(recommender_mean)
                .map(|(w, r)| w - r),
            1.0,
            true,
            |v| format!("(6f) − (7c) = {v:.2} ms"),
        ),
        target(
            "worker overhead beyond the recommender < 1 ms/job (wall)",
            f.median("worker_processing_p50_ms")
                .zip(recommender)
                .map(|(w, r)| w - r),
            1.0,
            true,
            |v| format!("(6e) − (7a) = {v:.2} ms"),
        ),
        target(
            "peak RSS < 200 MB per role (8)",
            max_rss,
            200.0,
            true,
            |v| format!("largest {v:.0} MB"),
        ),
    ]
}

/// `git rev-parse HEAD`, with "-dirty" when the tree has changes; "unknown" outside git.
pub fn git_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.trim().is_empty());
            format!("{}{}", head.trim(), if dirty { "-dirty" } else { "" })
        }
        None => "unknown".to_owned(),
    }
}
