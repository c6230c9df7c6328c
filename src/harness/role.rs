//! recq roles run as child processes, so that memory and CPU are measured per role and a
//! role can be killed the way production kills it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::HarnessError;

/// A running `recq <role>`; its log goes to a file.
pub struct Role {
    name: String,
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Role {
    /// Starts `recq <args>` with `env` added to this process's environment, logging to
    /// `$TMPDIR/recq-<name>.log`.
    pub fn spawn(
        recq: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Result<Role, HarnessError> {
        let log = std::env::temp_dir().join(format!("recq-{name}.log"));
        Role::spawn_logging_to(recq, name, args, env, log)
    }

    /// Like [`Role::spawn`], appending the role's output to `log`.
    pub fn spawn_logging_to(
        recq: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
        log: PathBuf,
    ) -> Result<Role, HarnessError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(HarnessError::io(format!("creating {}", log.display())))?;
        let stderr = file
            .try_clone()
            .map_err(HarnessError::io("cloning a log file handle"))?;
        let mut command = Command::new(recq);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(HarnessError::io(format!("starting {}", recq.display())))?;
        let pid = child.id().ok_or_else(|| {
            HarnessError::Failed(format!("{name} exited at once; see {}", log.display()))
        })?;
        Ok(Role {
            name: name.to_owned(),
            child,
            pid,
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails if the role has exited (it should run until stopped).
    pub fn check_running(&mut self) -> Result<(), HarnessError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(HarnessError::Failed(format!(
                "{} exited ({status}); see {}",
                self.name,
                self.log.display()
            ))),
            Err(e) => Err(HarnessError::io(format!("checking {}", self.name))(e)),
        }
    }

    /// SIGKILL: no draining, no final commit, exactly what a crash or an OOM kill does.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Peak resident memory so far (VmHWM), in MB (10^6 bytes).
    pub fn peak_rss_mb(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        parse_vm_hwm_kib(&status).map(|kib| kib as f64 * 1024.0 / 1e6)
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
    }

    /// SIGTERM (the roles drain and commit on it), then SIGKILL after 30 s. Returns false if
    /// it had to be killed.
    pub async fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(role = %self.name, "did not stop within 30 s of SIGTERM; killing it");
            let _ = self.child.kill().await;
            return false;
        }
        true
    }
}

fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15 of /proc/PID/stat; the command name may hold spaces, so
/// count from the closing parenthesis).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_memory_and_cpu_time_are_read_from_proc() {
        let status = "Name:\trecq\nVmPeak:\t  300000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(51_200));
        let stat = "4242 (recq worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_vm_hwm_kib(&own).unwrap() > 0);
    }
}
