//! A userspace TCP proxy on each directed peer link (this kernel has no `tc netem`;
//! etcd's robustness tests do the same): pass, delay, drop (reset the connection at
//! random, as lost packets look to a TLS stream) or blackhole (bytes vanish). Every
//! mode change closes the link's open connections so streams restart cleanly.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkMode {
    Pass,
    /// Each chunk waits `base` ± `jitter` milliseconds.
    Delay {
        base_ms: u64,
        jitter_ms: u64,
    },
    /// Each chunk resets the connection with probability `p`.
    Drop {
        p: f64,
    },
    /// Everything sent is read and discarded; nothing arrives.
    Blackhole,
}

/// One directed link's fault mode.
pub struct Link {
    mode: Mutex<LinkMode>,
    /// Bumped on every mode change; connection tasks end when it moves.
    generation: watch::Sender<u64>,
}

impl Link {
    pub fn mode(&self) -> LinkMode {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, mode: LinkMode) {
        let mut m = self.mode.lock().unwrap_or_else(|p| p.into_inner());
        if *m != mode {
            *m = mode;
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

/// Starts a proxy on `listener` forwarding to `target` (one directed link: a replica
/// dialing another's peer port); returns the link and the proxy's address.
pub fn start(
    listener: TcpListener,
    target: SocketAddr,
    stop: watch::Receiver<bool>,
) -> std::io::Result<(Arc<Link>, SocketAddr)> {
    let addr = listener.local_addr()?;
    let (generation, _) = watch::channel(0);
    let link = Arc::new(Link {
        mode: Mutex::new(LinkMode::Pass),
        generation,
    });
    tokio::spawn(accept_loop(listener, target, Arc::clone(&link), stop));
    Ok((link, addr))
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    link: Arc<Link>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let inbound = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let link = Arc::clone(&link);
        tokio::spawn(async move {
            let mut generation = link.generation.subscribe();
            let _ = generation.borrow_and_update();
            let mode = link.mode();
            if mode == LinkMode::Blackhole {
                // Accept and swallow: the dialer sees a connection that never answers.
                tokio::select! {
                    _ = generation.changed() => {}
                    _ = swallow(inbound) => {}
                }
                return;
            }
            let Ok(outbound) = TcpStream::connect(target).await else {
                return;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::select! {
                _ = generation.changed() => {}
                _ = pump(ri, wo, &link) => {}
                _ = pump(ro, wi, &link) => {}
            }
        });
    }
}

async fn swallow(mut s: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: &Link,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match link.mode() {
            LinkMode::Pass => {}
            LinkMode::Delay { base_ms, jitter_ms } => {
                let jitter = if jitter_ms > 0 {
                    rand::thread_rng().gen_range(0..=2 * jitter_ms)
                } else {
                    jitter_ms
                };
                let ms = (base_ms + jitter).saturating_sub(jitter_ms);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            LinkMode::Drop { p } => {
                if rand::thread_rng().gen_bool(p.clamp(0.0, 1.0)) {
                    return;
                }
            }
            LinkMode::Blackhole => continue,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
