//! The HTTP port's connections: accepted within caps (per node and per client address;
//! past them a new connection is closed at once and counted), each served by hyper and
//! watched by two timers: a request head must arrive whole within the header-read
//! timeout, counted from the connect or from its first byte (so connections that send
//! nothing or trickle a head are closed), and a kept-alive connection may sit idle
//! between requests for the idle timeout; all end gracefully when the drain stops taking
//! connections.
//!
//! # Layout
//! - `conn.rs`: the accept loop, the caps, and each connection's timers.
//! - `watch`: a connection's `Activity`, and the socket and body wrappers that tell it
//!   what happens.

use crate::gateway::counters::Counters;
use crate::http::forwarded::TrustedProxies;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// File descriptors kept for everything but client connections: the peer port, the
/// data dir's files, connections to providers.
const RESERVED_FDS: usize = 512;
/// Pause after an accept error (out of file descriptors): the error repeats at once.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Connections the kernel completes before the node accepts them: a burst of clients
/// (or a flood) beyond it waits for SYN retries, seconds each. The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// The HTTP port, listening (with address reuse, as a restarted node needs).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

mod watch;
use watch::{Activity, Arriving, Closing, Tracked, Watched};

/// How many connections the port takes, and how long one may wait.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub max: usize,
    /// 0: no cap per address.
    pub per_address: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Whose `X-Forwarded-For` names the client of a request.
    pub trusted_proxies: Arc<TrustedProxies>,
}

/// Open connections per client address, and a slot that gives its place back.
#[derive(Default)]
struct Open {
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One accepted connection's place in the counts, given back when it ends.
struct Slot {
    open: Arc<Open>,
    counters: Arc<Counters>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        let mut map = self
            .open
            .per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Open {
    /// A place for a connection from `ip`, or `None` (counted) past a cap.
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &ConnLimits,
        counters: &Arc<Counters>,
    ) -> Option<Slot> {
        if counters.connections_open.load(Ordering::Relaxed) as usize >= limits.max {
            counters
                .connections_refused_node
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut map = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if limits.per_address > 0 && *n >= limits.per_address {
            counters
                .connections_refused_address
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        counters.connections_open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            open: Arc::clone(self),
            counters: Arc::clone(counters),
            ip,
        })
    }
}

/// The most connections this process can hold open besides its own files: the file
/// limit is raised to its hard limit first (as Go's runtime does), and `wanted` is kept
/// only if it fits.
pub fn fit_to_file_limit(wanted: usize) -> usize {
    let limit = raise_file_limit();
    let fits = limit.saturating_sub(RESERVED_FDS as u64) as usize;
    if wanted > fits {
        tracing::warn!(
            max_connections = wanted,
            file_limit = limit,
            using = fits,
            "the process's file limit is too low for [limits] max_connections; raise it (ulimit -n, LimitNOFILE=) or lower max_connections"
        );
        fits.max(1)
    } else {
        wanted
    }
}

/// Raises the soft limit on open files to the hard limit; returns the soft limit now.
fn raise_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return u64::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Serves `router` on `listener` until `stop` resolves, then lets every open connection
/// finish its request in flight (idle ones close at once) and returns when all have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    counters: Arc<Counters>,
    stop: impl Future<Output = ()>,
) {
    // The timers are this module's (`Activity`), not hyper's, which has one timer for
    // both the head and the idle wait.
    let builder = auto::Builder::new(TokioExecutor::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Open::default());
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(slot) = open.admit(client_of(peer.ip()), &limits, &counters) else {
            // Closed at once: the client sees the connection end, not a hang.
            drop(tcp);
            continue;
        };
        // Relayed SSE events are small writes; without TCP_NODELAY, Nagle and the
        // client's delayed ACK hold them back for up to 40 ms each.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let watcher = graceful.watcher();
        let builder = Arc::clone(&builder);
        let counters = Arc::clone(&counters);
        let activity = Activity::new();
        let service = {
            let (router, activity) = (router.clone(), Arc::clone(&activity));
            let trusted = Arc::clone(&limits.trusted_proxies);
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let in_flight = activity.begin();
                let client =
                    SocketAddr::new(trusted.client(peer.ip(), request.headers()), peer.port());
                let mut router = router.clone();
                let activity = Arc::clone(&activity);
                async move {
                    let mut request =
                        request.map(|body| axum::body::Body::new(Arriving::new(body, activity)));
                    request
                        .extensions_mut()
                        .insert(crate::gateway::proxy::ClientAddr(client));
                    let response = tower_service::Service::call(&mut router, request).await;
                    Ok::<_, std::convert::Infallible>(response.map_or_else(
                        |never| match never {},
                        |r| {
                            r.map(|body| Tracked {
                                body,
                                _in_flight: in_flight,
                            })
                        },
                    ))
                }
            })
        };
        tokio::spawn(async move {
            let _slot = slot;
            let io = TokioIo::new(Watched {
                tcp,
                activity: Arc::clone(&activity),
            });
            let conn = watcher.watch(builder.serve_connection(io, service).into_owned());
            tokio::pin!(conn);
            loop {
                let wait = match activity.check(limits.header_read_timeout, limits.idle_timeout) {
                    Ok(wait) => wait,
                    Err(why) => {
                        let counter = match why {
                            Closing::SlowHead => &counters.connections_timed_out,
                            Closing::Idle => &counters.connections_idle_closed,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        // Dropping the connection closes its socket.
                        return;
                    }
                };
                tokio::select! {
                    biased;
                    ended = &mut conn => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The client an address stands for, as the per-address cap counts: an IPv4 address, or
/// an IPv6 address's /64 (one host holds a whole /64 to choose from).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(c));
        let v4: IpAddr = "127.0.0.2".parse().expect("ip");
        assert_eq!(client_of(v4), v4);
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().expect("ip");
        assert_eq!(client_of(mapped), v4);
    }
}
