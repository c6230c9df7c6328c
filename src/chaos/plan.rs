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
/// No kill falls this long before the extra projector leaves, so that its group is stable
/// when it does (a killed member is noticed after session.timeout.ms, 10 s, and the group
/// rejoins in ~5 s on Tansu). Tansu wedges a group for good when a member leaves it
/// (LeaveGroup, as SIGTERM does) in the middle of a rebalance; Apache Kafka does not, but
/// the local broker is what the run has.
const LEAVE_CALM: Duration = Duration::from_secs(20);
/// Kills are at least this far apart.
const KILL_SPACING: Duration = Duration::from_millis(1500);
/// A killed role comes back after 0.2 s to this long.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(2);
/// Time the broker needs after a restart before roles may start against it again.
const RESTART_SETTLE: Duration = Duration::from_secs(10);

/// Lays out the steps, sorted by time: a projector joins at 15 % of the window, the broker
/// pauses at 35 %, the extra projector leaves at 75 % (and at least 20 s after the pause
/// ends), the broker restarts at 88 % (and after the projector left); kills fall
/// at random times outside the calm spans around those, alternating workers and projectors.
/// Fails if `kills` do not fit.
pub fn plan(spec: PlanSpec) -> Result<Vec<Step>, String> {
    let at = |fraction: f64| spec.window.mul_f64(fraction);
    // The projector leaves once the group has settled after the pause, the broker restarts
    // once it has left.
    let pause_at = at(0.35);
    let leave_at = at(0.75).max(pause_at + spec.pause + LEAVE_CALM);
    let restart_at = at(0.88).max(leave_at + QUIET);
    let mut steps = vec![
        Step {
            at: at(0.15),
            action: Action::AddProjector,
        },
        Step {
            at: pause_at,
            action: Action::PauseBroker(spec.pause),
        },
        Step {
            at: leave_at,
            action: Action::RemoveProjector,
        },
    ];
    // Spans during which no kill may happen.
    let mut calm = vec![
        (
            pause_at.saturating_sub(QUIET),
            pause_at + spec.pause + QUIET,
        ),
        (leave_at.saturating_sub(LEAVE_CALM), leave_at + QUIET),
    ];
    if spec.restart_broker {
        steps.push(Step {
            at: restart_at,
            action: Action::RestartBroker,
        });
        calm.push((
            restart_at.saturating_sub(QUIET),
            restart_at + RESTART_SETTLE,
        ));
    }
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let kills = kill_times(&mut rng, spec, &calm)?;
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

/// `spec.kills` random instants in the window, sorted, at least [`KILL_SPACING`] apart and
/// (with the killed role's restart) outside every `calm` span. Placing them one by one can
/// paint itself into a corner, so a placement that stalls starts over.
fn kill_times(
    rng: &mut StdRng,
    spec: PlanSpec,
    calm: &[(Duration, Duration)],
) -> Result<Vec<Duration>, String> {
    let (earliest, latest) = (spec.window.mul_f64(0.05), spec.window);
    let fits = |t: Duration, kills: &[Duration]| {
        calm.iter()
            .all(|(from, to)| t + MAX_RESTART_DELAY < *from || t > *to)
            && kills.iter().all(|k| k.abs_diff(t) >= KILL_SPACING)
    };
    if latest > earliest {
        for _ in 0..200 {
            let mut kills: Vec<Duration> = Vec::new();
            for _ in 0..2_000 {
                if kills.len() == spec.kills as usize {
                    break;
                }
                let t = Duration::from_millis(
                    rng.random_range(earliest.as_millis() as u64..latest.as_millis() as u64),
                );
                if fits(t, &kills) {
                    kills.push(t);
                }
            }
            if kills.len() == spec.kills as usize {
                kills.sort();
                return Ok(kills);
            }
        }
    }
    Err(format!(
        "{} kills at least {KILL_SPACING:?} apart do not fit in a {:?} window around the \
         broker's pause and restart and the projector's leaving; send more requests or lower \
         the rate",
        spec.kills, spec.window
    ))
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
        // Pause 35 s..55 s, projector leaves at 75 s, restart at 88 s: no kill (or restart
        // of a killed role) near them, and none in the 20 s before the projector leaves.
        for kill in kills {
            let t = kill.at.as_secs_f64();
            assert!(!(31.0 - 2.0..=59.0).contains(&t), "kill at {t}");
            assert!(!(55.0 - 2.0..=79.0).contains(&t), "kill at {t}");
            assert!(!(84.0 - 2.0..=98.0).contains(&t), "kill at {t}");
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

    #[test]
    fn the_short_run_of_make_test_and_the_full_run_always_fit() {
        for seed in 0..300 {
            // tests/it/chaos.rs: 6,000 requests at 100/s.
            let short = PlanSpec {
                window: Duration::from_secs(60),
                kills: 6,
                pause: Duration::from_secs(5),
                restart_broker: false,
                seed,
            };
            assert!(plan(short).is_ok(), "seed {seed}");
            assert!(plan(spec(seed)).is_ok(), "seed {seed}");
        }
    }

    #[test]
    fn the_projector_leaves_only_after_the_group_settled_from_the_pause() {
        let mut short = spec(5);
        short.window = Duration::from_secs(40);
        short.kills = 4;
        let steps = plan(short).unwrap();
        let when = |action: Action| steps.iter().find(|s| s.action == action).unwrap().at;
        let resumed = when(Action::PauseBroker(short.pause)) + short.pause;
        assert!(when(Action::RemoveProjector) >= resumed + LEAVE_CALM);
        assert!(when(Action::RestartBroker) > when(Action::RemoveProjector));
    }
}
