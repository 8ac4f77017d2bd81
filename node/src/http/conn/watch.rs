//! What a connection's timers watch (`Activity`), and what tells them: the socket (bytes
//! in start a head), the request body (a head's timer runs until it has arrived) and the
//! response body (the request is in flight until it has been sent).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// What one connection is doing, as its timers see it: requests in flight, since when a
/// head has been coming in (`NONE`: none is), since when it has been idle. Times are
/// milliseconds since the connect.
///
/// Nothing here wakes the connection's watcher: it looks again at least once per header
/// timeout (`check`), so a head that starts at any moment is seen before its deadline,
/// and a request costs no extra wake-up of its connection's task.
pub(super) struct Activity {
    start: tokio::time::Instant,
    in_flight: AtomicU64,
    head_since_ms: AtomicU64,
    idle_since_ms: AtomicU64,
}

const NONE: u64 = u64::MAX;

/// Why a watched connection is closed.
pub(super) enum Closing {
    SlowHead,
    Idle,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
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
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since_ms.load(Ordering::Acquire) == NONE
        {
            let _ = self.head_since_ms.compare_exchange(
                NONE,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// A request's head arrived whole; its body is still due within the header timer,
    /// which `body_done` stops. The request is in flight until the guard is dropped
    /// (its response sent, or the request dropped unanswered).
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// A request's body has arrived whole (or was left unread).
    fn body_done(&self) {
        self.head_since_ms.store(NONE, Ordering::Release);
    }
}

/// A request in flight on its connection; dropping it ends it.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms.store(a.now_ms(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// Whether a timer has run out, or else when to look again: never later than one
    /// header timeout from now, since a head may start unannounced at any moment.
    pub(super) fn check(&self, header: Duration, idle: Duration) -> Result<Duration, Closing> {
        let now = self.now_ms();
        let head = self.head_since_ms.load(Ordering::Acquire);
        // A request being answered waits as long as its answer takes, once its body is in.
        if head == NONE && self.in_flight.load(Ordering::Acquire) > 0 {
            return Ok(header);
        }
        let (since, limit, why) = if head != NONE {
            (head, header, Closing::SlowHead)
        } else {
            let since = self.idle_since_ms.load(Ordering::Acquire);
            (since, idle, Closing::Idle)
        };
        let left = (limit.as_millis() as u64).saturating_sub(now.saturating_sub(since));
        if left == 0 {
            Err(why)
        } else {
            Ok(Duration::from_millis(left).min(header))
        }
    }
}

/// The socket, telling its connection's `Activity` when bytes come in.
pub(super) struct Watched {
    pub(super) tcp: TcpStream,
    pub(super) activity: Arc<Activity>,
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

/// A response body that ends its request's time in flight when it has been sent (or
/// dropped), keeping its size and end as they are.
pub(super) struct Tracked {
    pub(super) body: axum::body::Body,
    pub(super) _in_flight: InFlight,
}

/// A request body that tells its connection's `Activity` when it has arrived whole (or is
/// dropped unread): until then the header timer runs (a body trickled to hold a request
/// slot is cut like a trickled head).
pub(super) struct Arriving {
    body: hyper::body::Incoming,
    activity: Option<Arc<Activity>>,
}

impl Arriving {
    pub(super) fn new(body: hyper::body::Incoming, activity: Arc<Activity>) -> Arriving {
        let mut arriving = Arriving {
            body,
            activity: Some(activity),
        };
        if http_body::Body::is_end_stream(&arriving.body) {
            arriving.done();
        }
        arriving
    }

    fn done(&mut self) {
        if let Some(a) = self.activity.take() {
            a.body_done();
        }
    }
}

impl http_body::Body for Arriving {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_))))
            || http_body::Body::is_end_stream(&self.body)
        {
            self.done();
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Arriving {
    fn drop(&mut self) {
        self.done();
    }
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
