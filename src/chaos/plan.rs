//! The disturbance schedule of a chaos run: pure, and fixed by its seed so a failing run can
//! be repeated (`--seed`).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A role to kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Worker,
    Projector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// SIGKILL one running instance (picked at random when it happens), restarted after
    /// `restart_after`.
    Kill {
        target: Target,
        restart_after: Duration,
    },
    /// SIGSTOP the broker, SIGCONT after the duration.
    PauseBroker(Duration),
    /// Start one more projector (its group rebalances).
    AddProjector,
    /// Stop the added projector with SIGTERM (its group rebalances again).
    RemoveProjector,
    /// Stop the broker and start it again (only a persistent broker keeps the log).
    RestartBroker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// From the start of the run.
    pub at: Duration,
    pub action: Action,
}

/// What to schedule over `window` (the time requests are being sent).
#[derive(Debug, Clone, Copy)]
pub struct PlanSpec {
    pub window: Duration,
    pub kills: u32,
    pub pause: Duration,
    pub restart_broker: bool,
    pub seed: u64,
}

/// No kill (nor a killed role's restart) falls this close to a broker pause or restart: a
/// role starting while the broker does not answer exits with "broker unreachable" by design.
const QUIET: Duration = Duration::from_secs(4);
/// Kills are at least this far apart.
const KILL_SPACING: Duration = Duration::from_millis(1500);
/// A killed role comes back after 0.2 s to this long.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(2);
/// Time the broker needs after a restart before roles may start against it again.
const RESTART_SETTLE: Duration = Duration::from_secs(10);

/// Lays out the steps, sorted by time: a projector joins at 15 % of the window, the broker
/// pauses at 35 %, the extra projector leaves at 60 %, the broker restarts at 80 %; kills fall
/// at random times in between, alternating workers and projectors. Fails if `kills` do not fit.
pub fn plan(spec: PlanSpec) -> Result<Vec<Step>, String> {
    let at = |fraction: f64| spec.window.mul_f64(fraction);
    let mut steps = vec![
        Step {
            at: at(0.15),
            action: Action::AddProjector,
        },
        Step {
            at: at(0.35),
            action: Action::PauseBroker(spec.pause),
        },
        Step {
            at: at(0.6),
            action: Action::RemoveProjector,
        },
    ];
    // Spans during which no kill may happen.
    let mut quiet = vec![(
        at(0.35).saturating_sub(QUIET),
        at(0.35) + spec.pause + QUIET,
    )];
    if spec.restart_broker {
        steps.push(Step {
            at: at(0.8),
            action: Action::RestartBroker,
        });
        quiet.push((at(0.8).saturating_sub(QUIET), at(0.8) + RESTART_SETTLE));
    }
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let (earliest, latest) = (at(0.05), spec.window);
    let mut kills: Vec<Duration> = Vec::new();
    let mut tries = 0;
    while kills.len() < spec.kills as usize {
        tries += 1;
        if tries > 100_000 {
            return Err(format!(
                "{} kills at least {KILL_SPACING:?} apart do not fit in a {:?} window around \
                 the broker's pause and restart; send more requests or lower the rate",
                spec.kills, spec.window
            ));
        }
        if latest <= earliest {
            continue;
        }
        let t = Duration::from_millis(
            rng.random_range(earliest.as_millis() as u64..latest.as_millis() as u64),
        );
        let calm = quiet
            .iter()
            .all(|(from, to)| t + MAX_RESTART_DELAY < *from || t > *to);
        let spaced = kills.iter().all(|k| k.abs_diff(t) >= KILL_SPACING);
        if calm && spaced {
            kills.push(t);
        }
    }
    kills.sort();
    for (i, t) in kills.into_iter().enumerate() {
        let target = if i % 2 == 0 {
            Target::Worker
        } else {
            Target::Projector
        };
        let restart_after =
            Duration::from_millis(rng.random_range(200..MAX_RESTART_DELAY.as_millis() as u64));
        steps.push(Step {
            at: t,
            action: Action::Kill {
                target,
                restart_after,
            },
        });
    }
    steps.sort_by_key(|s| s.at);
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> PlanSpec {
        PlanSpec {
            window: Duration::from_secs(100),
            kills: 12,
            pause: Duration::from_secs(20),
            restart_broker: true,
            seed,
        }
    }

    #[test]
    fn a_plan_has_every_disturbance_and_keeps_kills_away_from_broker_outages() {
        let steps = plan(spec(7)).unwrap();
        let kills: Vec<&Step> = steps
            .iter()
            .filter(|s| matches!(s.action, Action::Kill { .. }))
            .collect();
        assert_eq!(kills.len(), 12);
        for target in [Target::Worker, Target::Projector] {
            let n = kills
                .iter()
                .filter(|s| matches!(s.action, Action::Kill { target: t, .. } if t == target))
                .count();
            assert_eq!(n, 6);
        }
        for action in [
            Action::AddProjector,
            Action::RemoveProjector,
            Action::RestartBroker,
            Action::PauseBroker(Duration::from_secs(20)),
        ] {
            assert_eq!(steps.iter().filter(|s| s.action == action).count(), 1);
        }
        // Pause 35 s..55 s, restart at 80 s: no kill or restart of a killed role near them.
        for kill in kills {
            let t = kill.at.as_secs_f64();
            assert!(!(31.0 - 2.0..=59.0).contains(&t), "kill at {t}");
            assert!(!(76.0 - 2.0..=90.0).contains(&t), "kill at {t}");
        }
        assert!(steps.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        assert_eq!(plan(spec(1)).unwrap(), plan(spec(1)).unwrap());
        assert_ne!(plan(spec(1)).unwrap(), plan(spec(2)).unwrap());
    }

    #[test]
    fn kills_that_cannot_fit_are_refused_rather_than_crowded() {
        let mut tight = spec(3);
        tight.window = Duration::from_secs(10);
        tight.kills = 50;
        assert!(plan(tight).is_err());
    }
}
