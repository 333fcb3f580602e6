//! A fault proxy in front of Redis: a real outage, or a Redis that does not answer, for one
//! app only, without touching the Redis server other tests share.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A TCP proxy in front of Redis that the test can cut and restore, or freeze.
pub struct Proxy {
    /// The port it listens on.
    port: u16,
    /// The URL of the Redis it forwards to.
    redis_url: String,
    task: Option<JoinHandle<()>>,
    frozen: watch::Sender<bool>,
    holed: watch::Sender<bool>,
    /// Set by [`Proxy::cut`] for the connections of the current listener: from then on they
    /// forward nothing, even those whose copy has not been aborted yet (aborting a task takes
    /// effect only when it is next polled, which on a loaded machine can be after the test's
    /// next request).
    severed: watch::Sender<bool>,
}

impl Proxy {
    /// Listens on a free port and forwards each connection to the Redis at `redis_url`.
    pub async fn start(redis_url: &str) -> Proxy {
        let (frozen, _) = watch::channel(false);
        let (holed, _) = watch::channel(false);
        let (severed, _) = watch::channel(false);
        let mut proxy = Proxy {
            port: 0,
            redis_url: redis_url.to_owned(),
            task: None,
            frozen,
            holed,
            severed,
        };
        proxy.restore().await;
        proxy
    }

    /// The Redis URL through the proxy.
    pub fn url(&self) -> String {
        let upstream = authority(&self.redis_url);
        self.redis_url
            .replacen(upstream, &format!("127.0.0.1:{}", self.port), 1)
    }

    /// Cuts every connection and stops listening (dropping the JoinSet aborts the copies).
    pub fn cut(&mut self) {
        self.severed.send_replace(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again, on the same port, after [`Proxy::cut`]: the server is back.
    pub async fn restore(&mut self) {
        self.cut();
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.port = listener.local_addr().unwrap().port();
        let upstream = authority(&self.redis_url).to_owned();
        let frozen = self.frozen.subscribe();
        let holed = self.holed.subscribe();
        // A new flag: the old listener's connections stay severed.
        let (severed_tx, severed) = watch::channel(false);
        self.severed = severed_tx;
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    break;
                };
                let (upstream, frozen, mut holed, severed) = (
                    upstream.clone(),
                    frozen.clone(),
                    holed.clone(),
                    severed.clone(),
                );
                conns.spawn(async move {
                    if *severed.borrow() {
                        return;
                    }
                    if *holed.borrow() {
                        // Accepted and never answered until healed, then closed.
                        let _ = holed.wait_for(|h| !*h).await;
                        return;
                    }
                    if let Ok(outbound) = TcpStream::connect(&upstream).await {
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        tokio::join!(
                            pump(ri, wo, frozen.clone(), holed.clone(), severed.clone()),
                            pump(ro, wi, frozen, holed, severed)
                        );
                    }
                });
            }
        }));
    }

    /// Stops forwarding (connections stay open, bytes wait) until [`Proxy::thaw`]: a Redis
    /// that does not answer, or a network that lost its packets.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again what waited and what follows.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// A black hole until [`Proxy::heal`]: both sides stay open, nothing is delivered and what
    /// is sent is discarded; a side the other end closed is kept open too, so the app never
    /// learns that anything happened (a silently partitioned network).
    pub fn black_hole(&self) {
        self.holed.send_replace(true);
    }

    /// Ends the black hole: connections it kept open are closed (the app reconnects).
    pub fn heal(&self) {
        self.holed.send_replace(false);
    }
}

/// The `host:port` of a `redis://[user[:password]@]host:port[/db]` URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Copies `from` to `to`, holding the bytes while the proxy is frozen and discarding them
/// while it is a black hole.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    mut holed: watch::Receiver<bool>,
    severed: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut discarded = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                // A black hole tells nobody that the other side is gone.
                let _ = holed.wait_for(|h| !*h).await;
                break;
            }
            Ok(n) => n,
        };
        if *holed.borrow() {
            discarded = true;
            continue;
        }
        if discarded {
            // The stream lost bytes in the hole: this connection is over.
            break;
        }
        if frozen.wait_for(|f| !*f).await.is_err() || *severed.borrow() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
