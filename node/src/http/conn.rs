//! The HTTP port's connections: accepted within caps (per node and per client address;
//! past them a new connection is closed at once and counted), each served by hyper and
//! watched by two timers: a request head must arrive whole within the header-read
//! timeout, counted from the connect or from its first byte (so connections that send
//! nothing or trickle a head are closed), and a kept-alive connection may sit idle
//! between requests for the idle timeout; all end gracefully when the drain stops taking
//! connections.

use crate::gateway::counters::Counters;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

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

/// How many connections the port takes, and how long one may wait.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max: usize,
    /// 0: no cap per address.
    pub per_address: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// What one connection is doing, as its timers see it: requests in flight, since when a
/// head has been coming in (`NONE`: none is), since when it has been idle. Times are
/// milliseconds since the connect.
struct Activity {
    start: tokio::time::Instant,
    in_flight: AtomicU64,
    head_since_ms: AtomicU64,
    idle_since_ms: AtomicU64,
}

const NONE: u64 = u64::MAX;

/// Why a watched connection is closed.
enum Closing {
    SlowHead,
    Idle,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: tokio::time::Instant::now(),
            in_flight: AtomicU64::new(0),
            // The first head is due from the connect on.
            head_since_ms: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Bytes came in: with no request in flight, they start a head.
    fn bytes_in(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_since_ms.compare_exchange(
                NONE,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// A request's head arrived whole.
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since_ms.store(NONE, Ordering::Release);
    }

    /// A response was sent (or the client went away).
    fn end(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether a timer has run out, or else when to look again.
    fn check(&self, limits: &ConnLimits) -> Result<Duration, Closing> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Ok(limits.header_read_timeout);
        }
        let now = self.now_ms();
        let head = self.head_since_ms.load(Ordering::Acquire);
        let (since, limit, why) = if head != NONE {
            (head, limits.header_read_timeout, Closing::SlowHead)
        } else {
            let idle = self.idle_since_ms.load(Ordering::Acquire);
            (idle, limits.idle_timeout, Closing::Idle)
        };
        let left = (limit.as_millis() as u64).saturating_sub(now.saturating_sub(since));
        if left == 0 {
            Err(why)
        } else {
            Ok(Duration::from_millis(left))
        }
    }
}

/// The socket, telling its connection's `Activity` when bytes come in.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_in();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A response body that tells its connection's `Activity` when it has been sent (or
/// dropped), keeping its size and end as they are.
struct Tracked {
    body: axum::body::Body,
    activity: Arc<Activity>,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.activity.end();
    }
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
        let Some(slot) = open.admit(peer.ip(), &limits, &counters) else {
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
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                activity.begin();
                let mut router = router.clone();
                let activity = Arc::clone(&activity);
                async move {
                    let response = tower_service::Service::call(
                        &mut router,
                        request.map(axum::body::Body::new),
                    )
                    .await;
                    Ok::<_, std::convert::Infallible>(response.map_or_else(
                        |never| match never {},
                        |r| r.map(|body| Tracked { body, activity }),
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
                let wait = match activity.check(&limits) {
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
