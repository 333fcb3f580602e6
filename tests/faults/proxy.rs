//! A TCP fault proxy in front of Redis, one per replica: pass, drop, black hole, delay.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// What the proxy does to the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards everything.
    Pass,
    /// Every connection closed, new ones refused (nothing listens on the port).
    Drop,
    /// Connections stay open, nothing is delivered, what is sent is discarded, and a close
    /// of either side is not passed on; on heal every connection open during it is closed.
    BlackHole,
    /// Every chunk is delivered this much later (a delay line: latency, not a throughput cap).
    Delay(Duration),
}

/// A proxy listening on a port of its own, forwarding to `upstream`.
pub struct Proxy {
    port: u16,
    upstream: String,
    mode: watch::Sender<Mode>,
    /// The accept loop, absent while dropped; it owns the connections (aborting it closes them).
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// Listens on a free port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (mode, _) = watch::channel(Mode::Pass);
        let acceptor = tokio::spawn(accept_loop(listener, upstream.to_owned(), mode.subscribe()));
        Ok(Proxy {
            port,
            upstream: upstream.to_owned(),
            mode,
            acceptor: Mutex::new(Some(acceptor)),
        })
    }

    /// The Redis URL through the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Switches to `mode`. Leaving `Drop` listens again on the same port.
    pub async fn set(&self, mode: Mode) -> io::Result<()> {
        let mut acceptor = self.acceptor.lock().await;
        self.mode.send_replace(mode);
        match (mode, acceptor.is_some()) {
            (Mode::Drop, true) => {
                let task = acceptor.take().expect("checked");
                task.abort();
                // Aborted: the listener and every connection are dropped with its future.
                let _ = task.await;
            }
            (Mode::Drop, false) | (_, true) => {}
            (_, false) => {
                let listener = bind_again(self.port).await?;
                *acceptor = Some(tokio::spawn(accept_loop(
                    listener,
                    self.upstream.clone(),
                    self.mode.subscribe(),
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.acceptor.get_mut().take() {
            task.abort();
        }
    }
}

/// Binds `port` again (polling for 5 s: a port just closed may still be held briefly).
async fn bind_again(port: u16) -> io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: String, mode: watch::Receiver<Mode>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((inbound, _)) = accepted {
                    conns.spawn(connection(inbound, upstream.clone(), mode.clone()));
                }
            }
            // Reaps finished connections.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One client connection, forwarded (or held) according to the mode.
async fn connection(inbound: TcpStream, upstream: String, mut mode: watch::Receiver<Mode>) {
    let _ = inbound.set_nodelay(true);
    if *mode.borrow() == Mode::BlackHole {
        hold(inbound, mode).await;
        return;
    }
    let Ok(outbound) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    // Set once a black hole began while this connection was open: it closes on heal.
    let tainted = Arc::new(AtomicBool::new(false));
    let (ri, wi) = inbound.into_split();
    let (ro, wo) = outbound.into_split();
    tokio::select! {
        _ = direction(ri, wo, mode.clone(), tainted.clone()) => {}
        _ = direction(ro, wi, mode.clone(), tainted.clone()) => {}
        _ = healed(&mut mode, &tainted) => {}
    }
}

/// A connection accepted during a black hole: read and discarded until heal, then closed.
async fn hold(mut inbound: TcpStream, mut mode: watch::Receiver<Mode>) {
    let drain = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match inbound.read(&mut buf).await {
                // The client's close is not answered either.
                Ok(0) | Err(_) => std::future::pending::<()>().await,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = drain => {}
        _ = mode.wait_for(|m| *m != Mode::BlackHole) => {}
    }
}

/// Resolves when a black hole this connection lived through is healed (or the proxy is gone).
async fn healed(mode: &mut watch::Receiver<Mode>, tainted: &AtomicBool) {
    loop {
        let now = *mode.borrow_and_update();
        if now == Mode::BlackHole {
            tainted.store(true, Ordering::SeqCst);
        } else if tainted.load(Ordering::SeqCst) {
            return;
        }
        if mode.changed().await.is_err() {
            return;
        }
    }
}

/// Copies `from` to `to` through a delay line; discards while the mode is a black hole.
async fn direction(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    tainted: Arc<AtomicBool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut read_mode = mode.clone();
    let read_tainted = tainted.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    // A black hole tells nobody that the other side is gone: `healed` closes.
                    if *read_mode.borrow() == Mode::BlackHole {
                        read_tainted.store(true, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                    return;
                }
                Ok(n) => n,
            };
            let at = match *read_mode.borrow_and_update() {
                Mode::BlackHole => {
                    read_tainted.store(true, Ordering::SeqCst);
                    continue;
                }
                Mode::Delay(d) => Instant::now() + d,
                Mode::Pass | Mode::Drop => Instant::now(),
            };
            if tx.send((at, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            // Bytes still in the delay line when a black hole begins are lost in it too.
            if *mode.borrow() == Mode::BlackHole {
                tainted.store(true, Ordering::SeqCst);
                continue;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
