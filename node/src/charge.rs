//! The charge pipeline, in two stages so that charging never adds latency to a request:
//! 1. the writer makes each charge durable in the node-local outbox (group commit:
//!    whatever arrives within 2 ms), moments after its answer;
//! 2. the proposer proposes charges in batches (a short window, group commit again),
//!    releases their budget holds once applied, and removes them from the outbox.
//!
//! At start the proposer first replays whatever the outbox still holds.

use crate::limits::Hold;
use crate::outbox::Outbox;
use crate::replicator::Replicator;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tollgate_proto::{Charge, Command, Outcome};

/// How long the first charge of a batch waits for company before the batch is proposed.
/// Every proposal costs a durable flush; at low load one flush per request would compete
/// with the request path for the CPU, and a few milliseconds cost a charge nothing (its
/// hold keeps the budget exact meanwhile).
const BATCH_WINDOW_MS: u64 = 5;

/// How long the first charge waits for company before the outbox is flushed: one fsync
/// per request would compete with requests for the CPU, while a charge not yet durable
/// for 2 ms longer is a crash window of the same order as the fsync itself.
const WRITE_WINDOW_MS: u64 = 2;

/// Pause before trying storage again after a failure.
const RETRY_BACKOFF_MS: u64 = 200;

/// One completed request's charge and the budget amounts it holds until applied.
pub struct PendingCharge {
    pub charge: Charge,
    pub hold: Hold,
}

/// Sends charges to the pipeline. Unbounded on purpose: a charge must never be dropped
/// or block a response; the pipeline drains far faster than requests complete.
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
    pub close: oneshot::Sender<()>,
}

/// Options of the pipeline.
pub struct PipelineConfig {
    pub batch_max: usize,
    /// Test hook: hold every proposal this long (a window in which a crash finds charges
    /// answered but not committed).
    pub propose_delay: Duration,
}

/// Starts both stages.
pub fn spawn(
    replicator: Arc<dyn Replicator>,
    outbox: Arc<Outbox>,
    config: PipelineConfig,
) -> ChargePipeline {
    let (tx, rx) = mpsc::unbounded_channel::<PendingCharge>();
    let (durable_tx, durable_rx) = mpsc::unbounded_channel::<PendingCharge>();
    let (close, close_rx) = oneshot::channel::<()>();
    tokio::spawn(write_stage(
        Arc::clone(&outbox),
        rx,
        durable_tx,
        close_rx,
        config.batch_max,
    ));
    let task = tokio::spawn(propose_stage(replicator, outbox, durable_rx, config));
    ChargePipeline {
        sender: ChargeSender(tx),
        task,
        close,
    }
}

async fn write_stage(
    outbox: Arc<Outbox>,
    mut rx: mpsc::UnboundedReceiver<PendingCharge>,
    durable: mpsc::UnboundedSender<PendingCharge>,
    mut close_rx: oneshot::Receiver<()>,
    batch_max: usize,
) {
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
        let window = tokio::time::sleep(Duration::from_millis(WRITE_WINDOW_MS));
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
        let charges: Vec<&Charge> = batch.iter().map(|p| &p.charge).collect();
        while let Err(e) = outbox.put(&charges).await {
            tracing::error!(error = %e, "charges not durable in the outbox; retrying");
            tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
        }
        for p in batch.drain(..) {
            // The proposer outlives this stage, so the send cannot fail.
            let _ = durable.send(p);
        }
    }
}

async fn propose_stage(
    replicator: Arc<dyn Replicator>,
    outbox: Arc<Outbox>,
    mut rx: mpsc::UnboundedReceiver<PendingCharge>,
    config: PipelineConfig,
) {
    match outbox.pending() {
        Ok(replay) if !replay.is_empty() => {
            tracing::info!(charges = replay.len(), "replaying the charge outbox");
            for chunk in replay.chunks(config.batch_max.max(1)) {
                propose(&replicator, &outbox, chunk.to_vec()).await;
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read the charge outbox; its charges stay for the next start")
        }
    }
    let mut batch: Vec<PendingCharge> = Vec::with_capacity(config.batch_max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let window = tokio::time::sleep(Duration::from_millis(BATCH_WINDOW_MS));
        tokio::pin!(window);
        while batch.len() < config.batch_max {
            tokio::select! {
                next = rx.recv() => match next {
                    Some(p) => batch.push(p),
                    None => break,
                },
                _ = &mut window => break,
            }
        }
        if !config.propose_delay.is_zero() {
            tokio::time::sleep(config.propose_delay).await;
        }
        propose(
            &replicator,
            &outbox,
            batch.iter().map(|p| p.charge.clone()).collect(),
        )
        .await;
        // Dropping the holds releases the amounts now counted in the ledgers.
        batch.clear();
    }
}

/// Proposes one batch until it is durable, then forgets it in the outbox.
async fn propose(replicator: &Arc<dyn Replicator>, outbox: &Outbox, charges: Vec<Charge>) {
    let command = Command::ChargeBatch { charges };
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
    if let Command::ChargeBatch { charges } = &command {
        if let Err(e) = outbox.remove(charges.iter().map(|c| c.request_id.as_str())) {
            tracing::warn!(error = %e, "applied charges stay in the outbox; the next start replays them as duplicates");
        }
    }
}
