//! The charge pipeline. `ChargeSender::send`, called as a request completes, appends the
//! charge to the node-local outbox (one `write(2)`, no fsync: a killed process loses
//! nothing) and queues it; then two stages, so that charging never adds latency to a
//! request:
//! 1. the writer makes the outbox durable (group commit: one fsync for whatever arrives
//!    within 2 ms) and only then passes the charges on;
//! 2. the proposer proposes charges in batches (a short window, group commit again),
//!    releases their budget holds once applied, and tells the outbox, which deletes
//!    segments left with nothing unapplied.
//!
//! At start the proposer first replays what the outbox holds after the last charge it
//! knows applied.

use crate::governance::admission::{Admission, Hold};
use crate::governance::outbox::{
    Done, Intent, Outbox, OutboxError, Position, Record, Replayed, SegmentId,
};
use crate::governance::replicator::Replicator;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tollgate_proto::records::RequestRecord;
use tollgate_proto::{Charge, Command, OutboxCharge, OutboxMark, Outcome};

/// The protocol version of `Command::OutboxCharges`.
const OUTBOX_CHARGES_PROTOCOL: u16 = 6;

/// How long the first charge of a batch waits for company before the batch is proposed.
/// Every proposal costs a durable flush on every node and, in a cluster, a round of
/// replication; fewer, larger batches leave that CPU to the request path (through three
/// nodes behind HAProxy, 20 ms instead of 5 ms gave about 20% more requests per second on
/// one 2-core machine). The wait costs a charge nothing: its hold keeps the budget exact
/// until it is applied.
const BATCH_WINDOW_MS: u64 = 20;

/// How long the first charge waits for company before the outbox is fsynced: one fsync
/// per request would compete with requests for the CPU, while a charge already in the OS
/// (safe from a crash of the process) can wait 2 ms longer for safety from power loss.
const WRITE_WINDOW_MS: u64 = 2;

/// Pause before trying storage again after a failure.
const RETRY_BACKOFF_MS: u64 = 200;

/// One completed request's charge and the budget amounts it holds until applied.
pub struct PendingCharge {
    pub charge: Charge,
    pub hold: Hold,
}

/// A charge in the pipeline and where its record is in the outbox (`None`: the record
/// could not be written; the charge is still proposed).
struct Logged {
    pending: PendingCharge,
    position: Option<Position>,
}

/// Sends charges to the pipeline. Unbounded on purpose: a charge must never be dropped
/// or block a response; the pipeline drains far faster than requests complete.
#[derive(Clone)]
pub struct ChargeSender {
    queue: mpsc::UnboundedSender<Logged>,
    outbox: Arc<Outbox>,
}

impl ChargeSender {
    /// Appends the charge to the outbox and queues it: a few microseconds, one `write(2)`
    /// under a lock, never an fsync. A charge the outbox could not take is logged and
    /// still queued: it loses only its safety from a crash.
    pub fn send(&self, pending: PendingCharge) {
        let record = Record::encode(&pending.charge);
        self.send_record(pending, record);
    }

    /// `send` for a request with a record: one outbox entry holds both, and completes
    /// the request's intents (written in the segments `closes`).
    pub fn send_done(&self, pending: PendingCharge, record: RequestRecord, closes: Vec<SegmentId>) {
        let done = Done {
            charge: Some(pending.charge.clone()),
            record,
        };
        let record = Record::done(&done, closes);
        self.send_record(pending, record);
    }

    /// Writes the record of a request that owes nothing (refused, or failed before a
    /// provider answered), completing its intents.
    pub fn record_free(&self, record: RequestRecord, closes: Vec<SegmentId>) {
        let request_id = record.request_id.clone();
        let written = Record::done(
            &Done {
                charge: None,
                record,
            },
            closes,
        )
        .and_then(|r| self.outbox.append(&r, |written| written));
        if let Err(e) = written {
            tracing::warn!(request_id = %request_id, error = ?e, "request record not written to the outbox; the request log misses it");
        }
    }

    /// Writes a request's intent before it goes to a provider: where it went, so that
    /// its completion closes it.
    pub fn intent(&self, intent: &Intent) -> Option<SegmentId> {
        let written =
            Record::intent(intent).and_then(|r| self.outbox.append(&r, |written| written));
        match written {
            Ok(position) => Some(position.segment),
            Err(e) => {
                tracing::warn!(request_id = %intent.record.request_id, error = ?e, "intent not written to the outbox; a crash while the provider answers would lose this request");
                None
            }
        }
    }

    fn send_record(&self, pending: PendingCharge, record: Result<Record, OutboxError>) {
        let refused = match record {
            // Queued under the outbox lock, so the queue is in log order.
            Ok(record) => self
                .outbox
                .append(&record, |written| self.queue(pending, written)),
            Err(e) => self.queue(pending, Err(e)),
        };
        if let Some(mpsc::error::SendError(lost)) = refused {
            // Only after shutdown has closed the pipeline; recorded so it is never silent.
            tracing::error!(request_id = %lost.pending.charge.request_id, cost_micros = lost.pending.charge.cost.0, in_outbox = lost.position.is_some(), "charge after pipeline shutdown; the next start replays it if it is in the outbox");
        }
    }

    fn queue(
        &self,
        pending: PendingCharge,
        written: Result<Position, OutboxError>,
    ) -> Option<mpsc::error::SendError<Logged>> {
        let position = match written {
            Ok(position) => Some(position),
            Err(e) => {
                tracing::error!(request_id = %pending.charge.request_id, error = ?e, "charge not in the outbox; it is still proposed, but a crash before then loses it");
                None
            }
        };
        self.queue.send(Logged { pending, position }).err()
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

/// Starts both stages: the write stage as a task of `tasks` (it ends once the pipeline
/// is closed), the propose stage as `ChargePipeline::task`.
pub fn spawn(
    replicator: Arc<dyn Replicator>,
    outbox: Arc<Outbox>,
    admission: Arc<Admission>,
    config: PipelineConfig,
    tasks: &mut tokio::task::JoinSet<()>,
) -> ChargePipeline {
    // Charges to replay hold their costs until applied, from before the first request
    // is admitted: applying them consumes this node's leases.
    #[cfg_attr(not(feature = "sim-bugs"), allow(unused_mut))]
    let mut replay_marks = true;
    let replay: Vec<(Replayed, Hold)> = {
        #[cfg_attr(not(feature = "sim-bugs"), allow(unused_mut))]
        let mut records = outbox.take_replay();
        #[cfg(feature = "sim-bugs")]
        if crate::hooks::bugs::active(crate::hooks::bugs::KnownBug::ReplayWithNewId) {
            replay_marks = false;
            for r in &mut records {
                r.charge.request_id = format!("{}-replayed", r.charge.request_id).as_str().into();
            }
        }
        let chains: Vec<_> = {
            let state = replicator.state().read();
            records
                .iter()
                .map(|r| state.budget_chain(&r.charge.key_id, r.charge.provider_config_id.as_ref()))
                .collect()
        };
        records
            .into_iter()
            .zip(chains)
            .map(|(r, chain)| {
                let hold = admission.hold_replayed(&chain, r.charge.cost);
                (r, hold)
            })
            .collect()
    };
    let node = admission.node();
    let (tx, rx) = mpsc::unbounded_channel::<Logged>();
    let (durable_tx, durable_rx) = mpsc::unbounded_channel::<Logged>();
    let (close, close_rx) = oneshot::channel::<()>();
    tasks.spawn(write_stage(
        Arc::clone(&outbox),
        rx,
        durable_tx,
        close_rx,
        config.batch_max,
    ));
    let task = tokio::spawn(propose_stage(
        Proposer {
            replicator,
            node,
            replay_marks,
        },
        Arc::clone(&outbox),
        replay,
        durable_rx,
        config,
    ));
    ChargePipeline {
        sender: ChargeSender { queue: tx, outbox },
        task,
        close,
    }
}

async fn write_stage(
    outbox: Arc<Outbox>,
    mut rx: mpsc::UnboundedReceiver<Logged>,
    durable: mpsc::UnboundedSender<Logged>,
    mut close_rx: oneshot::Receiver<()>,
    batch_max: usize,
) {
    let mut batch: Vec<Logged> = Vec::with_capacity(batch_max);
    loop {
        // `biased`: the branches are polled in order, so a run replays exactly (the
        // simulator) and queued charges are taken before the close.
        let first = tokio::select! {
            biased;
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
                biased;
                next = rx.recv() => match next {
                    Some(l) => batch.push(l),
                    None => break,
                },
                _ = &mut window => break,
            }
        }
        // The queue is in log order, so the segments come sorted and dedup removes all
        // repeats.
        let mut segments: Vec<SegmentId> = batch
            .iter()
            .filter_map(|l| l.position.map(|p| p.segment))
            .collect();
        segments.dedup();
        while let Err(e) = outbox.sync(&segments).await {
            tracing::error!(error = ?e, "charges not durable in the outbox; retrying");
            tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
        }
        for l in batch.drain(..) {
            // The proposer outlives this stage, so the send cannot fail.
            let _ = durable.send(l);
        }
    }
}

/// Proposes one batch at a time, in queue order, which is the outbox's log order: the
/// outbox relies on it to know every charge before the last one applied is applied too.
async fn propose_stage(
    proposer: Proposer,
    outbox: Arc<Outbox>,
    mut replay: Vec<(Replayed, Hold)>,
    mut rx: mpsc::UnboundedReceiver<Logged>,
    config: PipelineConfig,
) {
    if !replay.is_empty() {
        tracing::info!(charges = replay.len(), "replaying the charge outbox");
        while !replay.is_empty() {
            let chunk: Vec<(Replayed, Hold)> = replay
                .drain(..replay.len().min(config.batch_max.max(1)))
                .collect();
            let charges = chunk.iter().map(|(r, _)| {
                let mark = Some(r.position).filter(|_| proposer.replay_marks);
                (&r.charge, mark)
            });
            proposer.propose(&outbox, charges).await;
            let positions = chunk.iter().map(|(r, _)| r.position).collect();
            // Dropping the holds releases the amounts now counted in the ledgers.
            drop(chunk);
            mark_applied(&outbox, positions).await;
        }
    }
    let mut batch: Vec<Logged> = Vec::with_capacity(config.batch_max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let window = tokio::time::sleep(Duration::from_millis(BATCH_WINDOW_MS));
        tokio::pin!(window);
        while batch.len() < config.batch_max {
            tokio::select! {
                biased;
                next = rx.recv() => match next {
                    Some(l) => batch.push(l),
                    None => break,
                },
                _ = &mut window => break,
            }
        }
        if !config.propose_delay.is_zero() {
            tokio::time::sleep(config.propose_delay).await;
        }
        let charges = batch.iter().map(|l| (&l.pending.charge, l.position));
        proposer.propose(&outbox, charges).await;
        let positions = batch.iter().filter_map(|l| l.position).collect();
        // Dropping the holds releases the amounts now counted in the ledgers.
        batch.clear();
        mark_applied(&outbox, positions).await;
    }
    // Everything queued is applied: a clean stop leaves nothing to replay.
    outbox.seal();
}

/// Tells the outbox these charges are applied. It records (and fsyncs) the position of
/// the last one and deletes emptied segments, so this runs off the async threads.
async fn mark_applied(outbox: &Arc<Outbox>, positions: Vec<crate::governance::outbox::Position>) {
    if outbox.is_simulated() {
        outbox.applied(positions);
        return;
    }
    let outbox = Arc::clone(outbox);
    if let Err(e) = tokio::task::spawn_blocking(move || outbox.applied(positions)).await {
        tracing::error!(error = %e, "recording applied charges failed; the next start replays them as duplicates");
    }
}

/// Proposes this node's charges: each consumes the node's leases of its budgets.
struct Proposer {
    replicator: Arc<dyn Replicator>,
    node: u64,
    /// Replayed charges go with their place in the outbox (not under
    /// `KnownBug::ReplayWithNewId`).
    replay_marks: bool,
}

impl Proposer {
    /// Proposes one batch until it is durable (or rejected, which retrying cannot change).
    /// Once the cluster is at protocol 6, each charge goes with where it is in `outbox`,
    /// and the state de-duplicates by that (`Command::OutboxCharges`).
    async fn propose<'a>(
        &self,
        outbox: &Outbox,
        charges: impl Iterator<Item = (&'a Charge, Option<Position>)>,
    ) {
        let version = self.replicator.state().read().protocol_version();
        let command = if version >= OUTBOX_CHARGES_PROTOCOL {
            Command::OutboxCharges {
                node: self.node,
                outbox: outbox.id(),
                charges: charges
                    .map(|(charge, position)| OutboxCharge {
                        charge: charge.clone(),
                        mark: position.map(|p| OutboxMark {
                            segment: p.segment_number(),
                            end: p.end,
                        }),
                    })
                    .collect(),
            }
        } else {
            Command::NodeChargeBatch {
                node: self.node,
                charges: charges.map(|(charge, _)| charge.clone()).collect(),
            }
        };
        loop {
            match self.replicator.propose(command.clone()).await {
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
    }
}

#[cfg(test)]
mod tests;
