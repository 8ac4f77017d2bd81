//! Idle provider connections, kept per scheme and authority for reuse. A connection in
//! the pool is driven by nobody: it is looked at (polled once, without a waker) when it
//! is taken and by a sweep every `SWEEP_EVERY`, so one the provider closed or that sat
//! longer than the idle time is dropped, not used.

use super::connect::Io;
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::http::uri::Authority;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The HTTP/1.1 connection future of one provider connection.
pub type Conn = Connection<TokioIo<Io>, Full<Bytes>>;

/// How often idle connections are looked at when nobody takes them.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// Which connections can carry a request: same scheme, same authority.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub https: bool,
    pub authority: Authority,
}

/// A connection between two requests.
pub struct Idle {
    pub sender: SendRequest<Full<Bytes>>,
    pub conn: Conn,
    since: Instant,
}

pub struct Pool {
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    /// How long a connection may wait for its next request.
    idle_for: Duration,
    /// Most connections kept per key.
    max_per_key: usize,
}

impl Pool {
    /// A pool whose sweeper runs on the current runtime until the pool is dropped.
    pub fn new(idle_for: Duration, max_per_key: usize) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            idle: Mutex::new(HashMap::new()),
            idle_for,
            max_per_key,
        });
        let weak = Arc::downgrade(&pool);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(weak));
        }
        pool
    }

    /// The most recently used live connection for `key`, if any. Each candidate is
    /// looked at (a read attempt) outside the lock.
    pub fn take(&self, key: &Key) -> Option<Idle> {
        loop {
            let mut candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.get_mut(key)?.pop()?
            };
            if candidate.since.elapsed() < self.idle_for && candidate.usable() {
                return Some(candidate);
            }
        }
    }

    /// Keeps a connection whose exchange is complete, if it can carry another.
    pub fn put(&self, key: Key, sender: SendRequest<Full<Bytes>>, conn: Conn) {
        let mut candidate = Idle {
            sender,
            conn,
            since: Instant::now(),
        };
        if !candidate.usable() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(key).or_default();
        if list.len() < self.max_per_key {
            list.push(candidate);
        }
    }

    /// Drops the connections that expired or were closed.
    fn sweep_once(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| {
            list.retain_mut(|c| c.since.elapsed() < self.idle_for && c.usable());
            !list.is_empty()
        });
    }
}

impl Idle {
    /// Whether the connection is open and ready for a request: polled once without a
    /// waker, which also takes in a close or stray bytes from the provider.
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if Pin::new(&mut self.conn).poll(&mut cx).is_ready() {
            return false;
        }
        matches!(self.sender.poll_ready(&mut cx), Poll::Ready(Ok(())))
    }
}

async fn sweep(pool: Weak<Pool>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.sweep_once(),
            None => return,
        }
    }
}
