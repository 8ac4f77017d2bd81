//! The charge pipeline: completed requests send their charge here; one task proposes
//! them in batches (group commit: whatever arrived while the previous batch was being
//! made durable) and releases the budget holds once applied. Charging never adds latency
//! to the request path.

use crate::limits::Hold;
use crate::replicator::Replicator;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tollgate_proto::{Charge, Command, Outcome};

/// How long the first charge of a batch waits for company before the batch is proposed.
/// Every proposal costs a durable flush; at low load one flush per request would compete
/// with the request path for the CPU, and a few milliseconds cost a charge nothing (its
/// hold keeps the budget exact meanwhile).
const BATCH_WINDOW_MS: u64 = 5;

/// Pause before proposing a batch again after a storage failure.
const RETRY_BACKOFF_MS: u64 = 200;

/// One completed request's charge and the budget amounts it holds until applied.
pub struct PendingCharge {
    pub charge: Charge,
    pub hold: Hold,
}

/// Sends charges to the pipeline. Unbounded on purpose: a charge must never be dropped
/// or block a response; the batcher drains far faster than requests complete.
#[derive(Clone)]
pub struct ChargeSender(mpsc::UnboundedSender<PendingCharge>);

impl ChargeSender {
    pub fn send(&self, pending: PendingCharge) {
        if let Err(mpsc::error::SendError(lost)) = self.0.send(pending) {
            // Only after shutdown has closed the pipeline; recorded so it is never silent.
            tracing::error!(request_id = %lost.charge.request_id, cost_micros = lost.charge.cost.0, "charge after pipeline shutdown");
        }
    }
}

/// The running pipeline: send `close` at shutdown, then await `task`, which ends once
/// everything queued before the close is applied.
pub struct ChargePipeline {
    pub sender: ChargeSender,
    pub task: tokio::task::JoinHandle<()>,
    pub close: tokio::sync::oneshot::Sender<()>,
}

/// Starts the batcher.
pub fn spawn(replicator: Arc<dyn Replicator>, batch_max: usize) -> ChargePipeline {
    let (tx, mut rx) = mpsc::unbounded_channel::<PendingCharge>();
    let (close, mut close_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut batch: Vec<PendingCharge> = Vec::with_capacity(batch_max);
        loop {
            let first = tokio::select! {
                first = rx.recv() => first,
                _ = &mut close_rx, if !close_rx.is_terminated() => {
                    // Refuse new charges; those already queued are still received.
                    rx.close();
                    continue;
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            let window = tokio::time::sleep(Duration::from_millis(BATCH_WINDOW_MS));
            tokio::pin!(window);
            while batch.len() < batch_max {
                tokio::select! {
                    next = rx.recv() => match next {
                        Some(p) => batch.push(p),
                        None => break,
                    },
                    _ = &mut window => break,
                }
            }
            let command = Command::ChargeBatch {
                charges: batch.iter().map(|p| p.charge.clone()).collect(),
            };
            loop {
                match replicator.propose(command.clone()).await {
                    Ok(Outcome::Charged {
                        applied,
                        duplicates,
                    }) => {
                        tracing::debug!(applied, duplicates, "charge batch applied");
                        break;
                    }
                    Ok(other) => {
                        tracing::error!(outcome = ?other, "charge batch rejected");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "charge batch not durable; retrying");
                        tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                    }
                }
            }
            // Dropping the holds releases the amounts now counted in the ledgers.
            batch.clear();
        }
    });
    ChargePipeline {
        sender: ChargeSender(tx),
        task,
        close,
    }
}
