//! A TCP proxy the test controls, to cut recq off from a dependency (Postgres, the schema
//! registry) without touching the real server, which other tests share.
//!
//! While cut, existing connections are dropped and new ones are accepted and closed at once,
//! which is what a client sees when a server restarts or a network path fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    accept: JoinHandle<()>,
}

struct Inner {
    target: SocketAddr,
    cut: AtomicBool,
    /// Cancelled by `cut()`: every connection forwarded before it is dropped.
    generation: Mutex<CancellationToken>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (random port) and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            target,
            cut: AtomicBool::new(false),
            generation: Mutex::new(CancellationToken::new()),
        });
        let accept = tokio::spawn({
            let inner = inner.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if inner.cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let generation = inner.generation.lock().unwrap().clone();
                    tokio::spawn(forward(client, inner.target, generation));
                }
            }
        });
        Proxy {
            addr,
            inner,
            accept,
        }
    }

    /// Starts a proxy to the host:port of `url` and returns it with `url` pointing at it.
    pub async fn for_url(url: &str) -> (Proxy, String) {
        let (prefix, authority, rest) = split_authority(url);
        let host_port = authority.rsplit('@').next().unwrap();
        let target: SocketAddr = tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap();
        let proxy = Proxy::start(target).await;
        let userinfo = authority
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        let proxied = format!("{prefix}{userinfo}{}{rest}", proxy.addr);
        (proxy, proxied)
    }

    /// Drops every open connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.inner.cut.store(true, Ordering::SeqCst);
        let mut generation = self.inner.generation.lock().unwrap();
        generation.cancel();
        *generation = CancellationToken::new();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.inner.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.inner.generation.lock().unwrap().cancel();
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, cut: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = cut.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}

/// ("scheme://", "user@host:port", "/path?query") of a URL.
fn split_authority(url: &str) -> (&str, &str, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    (&url[..start], &url[start..end], &url[end..])
}
