//! The drain signal: SIGTERM, SIGINT or `tollgate admin drain N` start it once; the
//! server (stop taking traffic, finish what is in flight, flush charges, give leases
//! back, exit) and the cluster (hand leadership over) act on it. Streams still open at
//! the drain timeout are cut through `cut_streams`, so that they are charged before the
//! charge pipeline closes.

use std::sync::Arc;
use tokio::sync::watch;

pub struct Drain {
    started: watch::Sender<bool>,
    cut: watch::Sender<bool>,
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain {
            started: watch::Sender::new(false),
            cut: watch::Sender::new(false),
        })
    }

    /// Starts the drain; `false` if it had already started.
    pub fn start(&self) -> bool {
        self.started
            .send_if_modified(|started| !std::mem::replace(started, true))
    }

    pub fn is_draining(&self) -> bool {
        *self.started.borrow()
    }

    /// Resolves once the drain has started.
    pub async fn started(&self) {
        let mut rx = self.started.subscribe();
        // The sender lives as long as `self`, so this only returns once started.
        let _ = rx.wait_for(|started| *started).await;
    }

    /// Ends every relayed stream at its next step (the drain timed out).
    pub fn cut_streams(&self) {
        self.cut.send_replace(true);
    }

    /// What a relayed stream watches for `cut_streams`.
    pub fn cut_signal(&self) -> watch::Receiver<bool> {
        self.cut.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_once_and_wakes_waiters() {
        let drain = Drain::new();
        assert!(!drain.is_draining());
        let waiter = tokio::spawn({
            let drain = Arc::clone(&drain);
            async move { drain.started().await }
        });
        assert!(drain.start());
        assert!(!drain.start(), "a second start is a no-op");
        waiter.await.unwrap();
        assert!(drain.is_draining());
        // A waiter that comes after the start returns at once.
        drain.started().await;
    }

    #[tokio::test]
    async fn cutting_reaches_signals_taken_before_and_after() {
        let drain = Drain::new();
        let mut before = drain.cut_signal();
        assert!(!*before.borrow());
        drain.cut_streams();
        before.wait_for(|cut| *cut).await.unwrap();
        assert!(*drain.cut_signal().borrow());
    }
}
