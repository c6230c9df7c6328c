//! The run's `recq worker` and `recq projector` processes: started, killed, restarted and
//! watched. A role that exits without being told to is recorded (and started again, so the
//! run goes on and the failure shows in the figures).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::seq::IndexedRandom;

use super::ChaosError;
use super::plan::Target;
use crate::harness::role::Role;

/// One slot of the fleet; its process comes and goes.
struct Instance {
    name: String,
    target: Target,
    role: Option<Role>,
    /// Set while the slot waits to be started again after a kill.
    restart_at: Option<Instant>,
    /// False once removed from the run for good (the extra projector after it left).
    wanted: bool,
}

/// Starts processes: the binary, their environment and where their logs go.
struct Launcher {
    recq: PathBuf,
    env: Vec<(&'static str, String)>,
    log_dir: PathBuf,
}

impl Launcher {
    fn log(&self, instance: &Instance) -> PathBuf {
        self.log_dir.join(format!("{}.log", instance.name))
    }

    fn spawn(&self, instance: &mut Instance) -> Result<(), ChaosError> {
        let role = match instance.target {
            Target::Worker => "worker",
            Target::Projector => "projector",
        };
        instance.role = Some(Role::spawn_logging_to(
            &self.recq,
            &instance.name,
            &[role],
            &self.env,
            self.log(instance),
        )?);
        instance.restart_at = None;
        Ok(())
    }
}

pub struct Fleet {
    launcher: Launcher,
    instances: Vec<Instance>,
    pub kills: u32,
    pub pauses: u32,
    pub broker_restarts: u32,
    pub projectors_added: u32,
    pub projectors_removed: u32,
    pub unexpected_exits: Vec<String>,
}

impl Fleet {
    /// Starts `workers` workers and `projectors` projectors.
    pub fn start(
        recq: PathBuf,
        env: Vec<(&'static str, String)>,
        log_dir: PathBuf,
        workers: u32,
        projectors: u32,
    ) -> Result<Fleet, ChaosError> {
        let mut fleet = Fleet {
            launcher: Launcher { recq, env, log_dir },
            instances: Vec::new(),
            kills: 0,
            pauses: 0,
            broker_restarts: 0,
            projectors_added: 0,
            projectors_removed: 0,
            unexpected_exits: Vec::new(),
        };
        for _ in 0..workers {
            fleet.add(Target::Worker)?;
        }
        for _ in 0..projectors {
            fleet.add(Target::Projector)?;
        }
        Ok(fleet)
    }

    fn add(&mut self, target: Target) -> Result<(), ChaosError> {
        let n = self.instances.iter().filter(|i| i.target == target).count();
        let name = match target {
            Target::Worker => format!("worker-{}", n + 1),
            Target::Projector => format!("projector-{}", n + 1),
        };
        let mut instance = Instance {
            name,
            target,
            role: None,
            restart_at: None,
            wanted: true,
        };
        self.launcher.spawn(&mut instance)?;
        self.instances.push(instance);
        Ok(())
    }

    /// SIGKILLs a running instance of `target`, picked at random, and schedules its restart.
    pub async fn kill(
        &mut self,
        target: Target,
        restart_after: Duration,
    ) -> Result<(), ChaosError> {
        let running: Vec<usize> = (0..self.instances.len())
            .filter(|&i| self.instances[i].target == target && self.instances[i].role.is_some())
            .collect();
        let Some(&i) = running.choose(&mut rand::rng()) else {
            return Err(ChaosError::Failed(format!("no running {target:?} to kill")));
        };
        let instance = &mut self.instances[i];
        if let Some(role) = instance.role.take() {
            tracing::info!(role = %instance.name, "SIGKILL");
            role.kill().await;
            self.kills += 1;
        }
        instance.restart_at = Some(Instant::now() + restart_after);
        Ok(())
    }

    /// One more projector joins the group.
    pub fn add_projector(&mut self) -> Result<(), ChaosError> {
        self.add(Target::Projector)?;
        self.projectors_added += 1;
        Ok(())
    }

    /// The last projector added leaves the group (SIGTERM: it drains and commits).
    pub async fn remove_projector(&mut self) {
        let Some(instance) = self
            .instances
            .iter_mut()
            .rev()
            .find(|i| i.target == Target::Projector && i.wanted)
        else {
            return;
        };
        instance.wanted = false;
        instance.restart_at = None;
        if let Some(role) = instance.role.take() {
            if !role.stop().await {
                self.unexpected_exits.push(format!(
                    "{} did not stop within 30 s of SIGTERM",
                    instance.name
                ));
            }
            self.projectors_removed += 1;
        }
    }

    /// Restarts killed instances whose time has come and records (then restarts) any that
    /// exited by themselves. Returns true if it started a process.
    pub fn tick(&mut self) -> Result<bool, ChaosError> {
        let mut started = false;
        let now = Instant::now();
        for instance in &mut self.instances {
            if let Some(role) = &mut instance.role
                && let Err(e) = role.check_running()
            {
                self.unexpected_exits.push(e.to_string());
                instance.role = None;
                instance.restart_at = Some(now);
            }
            if instance.wanted
                && instance.role.is_none()
                && instance.restart_at.is_some_and(|at| at <= now)
            {
                self.launcher.spawn(instance)?;
                started = true;
            }
        }
        Ok(started)
    }

    /// Whether a killed instance still waits for its restart.
    pub fn restarts_pending(&self) -> bool {
        self.instances
            .iter()
            .any(|i| i.wanted && i.restart_at.is_some())
    }

    /// Stops every running process with SIGTERM; returns those that had to be killed.
    pub async fn stop_all(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        for instance in &mut self.instances {
            if let Some(role) = instance.role.take()
                && !role.stop().await
            {
                failures.push(format!(
                    "{} did not stop within 30 s of SIGTERM",
                    instance.name
                ));
            }
        }
        failures
    }

    /// Partition assignments the processes logged: one per member per rebalance.
    pub fn assignments_logged(&self) -> usize {
        self.instances
            .iter()
            .filter_map(|i| std::fs::read_to_string(self.launcher.log(i)).ok())
            .map(|log| log.matches("partitions assigned").count())
            .sum()
    }
}
