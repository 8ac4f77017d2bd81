//! The charge pipeline's unit tests: every charge applied once, a kill replays.

use super::*;
use crate::governance::replicator::LocalReplicator;
use std::path::PathBuf;
use tollgate_proto::{KeyId, RequestId, Usage, Usd};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-charge-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn admission(replicator: &Arc<dyn Replicator>) -> Arc<Admission> {
    Admission::new(
        1,
        crate::governance::admission::Mode::Leases,
        Arc::clone(replicator),
        Arc::new(crate::clock::SystemClock::default()),
    )
}

fn pending(n: u64) -> PendingCharge {
    PendingCharge {
        charge: Charge {
            request_id: RequestId(format!("req_{n:020}")),
            key_id: KeyId::from("vk_test"),
            provider_config_id: None,
            model: "claude-sonnet-4-5".into(),
            usage: Usage {
                input_tokens: 1_000,
                output_tokens: 500,
                ..Usage::default()
            },
            cost: Usd(10_500),
            at_ms: 1_700_000_000_000 + n,
        },
        hold: Hold::none(),
    }
}

fn segments_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count()
    })
}

/// Sends charges through the whole pipeline, timing `send`, then closes it: every
/// charge is applied and a clean stop leaves the outbox empty.
#[tokio::test]
async fn every_sent_charge_is_applied_and_a_clean_stop_empties_the_outbox() {
    const N: u64 = 20_000;
    let dir = temp_dir("pipeline");
    let replicator: Arc<dyn Replicator> =
        Arc::new(LocalReplicator::open(&dir.join("gov")).expect("governance store"));
    let outbox = Arc::new(Outbox::open(&dir.join("outbox")).expect("outbox"));
    let mut stages = tokio::task::JoinSet::new();
    let pipeline = spawn(
        Arc::clone(&replicator),
        Arc::clone(&outbox),
        admission(&replicator),
        PipelineConfig {
            batch_max: 512,
            propose_delay: Duration::ZERO,
        },
        &mut stages,
    );
    let charges: Vec<PendingCharge> = (0..N).map(pending).collect();
    let started = std::time::Instant::now();
    for p in charges {
        pipeline.sender.send(p);
    }
    let per_send = started.elapsed() / N as u32;
    let log_bytes: u64 = std::fs::read_dir(dir.join("outbox"))
        .expect("outbox dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "ChargeSender::send: {per_send:?} per charge over {N} charges, {} bytes per record",
        log_bytes / N
    );
    assert_eq!(
        outbox.len(),
        N as usize,
        "every charge in the outbox at once"
    );
    assert_eq!(segments_in(&dir.join("outbox")), 1);

    pipeline.close.send(()).expect("pipeline running");
    pipeline.task.await.expect("pipeline task");
    let usage = replicator
        .state()
        .read()
        .usage_of_key(&KeyId::from("vk_test"));
    assert_eq!(usage.requests, N);
    assert!(outbox.is_empty());
    assert_eq!(segments_in(&dir.join("outbox")), 0);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Sends a charge and one charged more than `DEDUP_HORIZON_MS` later, waits until both
/// are applied, and gives what reads the key's request count.
async fn send_two_an_hour_apart<'a>(
    pipeline: &ChargePipeline,
    replicator: &'a Arc<dyn Replicator>,
    outbox: &Outbox,
) -> impl Fn() -> u64 + 'a {
    let mut late = pending(1);
    late.charge.at_ms += tollgate_raft::state::DEDUP_HORIZON_MS + 1;
    pipeline.sender.send(pending(0));
    pipeline.sender.send(late);
    let usage = move || {
        let key = KeyId::from("vk_test");
        replicator.state().read().usage_of_key(&key).requests
    };
    for _ in 0..500 {
        if usage() == 2 && outbox.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    usage
}

/// The replicated state remembers request ids for `DEDUP_HORIZON_MS` of charge time
/// only, so after a kill the outbox must not replay a charge it knows was applied:
/// past the horizon it would count twice.
#[tokio::test]
async fn a_charge_applied_before_a_kill_is_not_replayed() {
    let dir = temp_dir("applied-kill");
    let replicator: Arc<dyn Replicator> =
        Arc::new(LocalReplicator::open(&dir.join("gov")).expect("governance store"));
    let config = || PipelineConfig {
        batch_max: 16,
        propose_delay: Duration::ZERO,
    };
    let outbox = Arc::new(Outbox::open(&dir.join("outbox")).expect("outbox"));
    let mut stages = tokio::task::JoinSet::new();
    let pipeline = spawn(
        Arc::clone(&replicator),
        Arc::clone(&outbox),
        admission(&replicator),
        config(),
        &mut stages,
    );
    let usage = send_two_an_hour_apart(&pipeline, &replicator, &outbox).await;
    assert_eq!(usage(), 2);
    // The kill: the pipeline stops without sealing the outbox.
    pipeline.task.abort();
    let outbox = Arc::new(Outbox::open(&dir.join("outbox")).expect("outbox"));
    let mut stages = tokio::task::JoinSet::new();
    let pipeline = spawn(
        Arc::clone(&replicator),
        Arc::clone(&outbox),
        admission(&replicator),
        config(),
        &mut stages,
    );
    pipeline.close.send(()).expect("pipeline running");
    pipeline.task.await.expect("pipeline task");
    assert_eq!(usage(), 2, "no applied charge counted twice");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Protocol 6: charges go with where they are in the outbox, so even when a start replays
/// charges that were applied (the applied mark lost with the disk's cache, say), and they
/// are older than the ids the state remembers, none counts twice.
#[tokio::test]
async fn replayed_charges_are_known_by_their_place_in_the_outbox() {
    assert_eq!(
        OUTBOX_CHARGES_PROTOCOL,
        Command::OutboxCharges {
            node: 0,
            outbox: 0,
            charges: Vec::new()
        }
        .since_version()
    );
    let dir = temp_dir("outbox-marks");
    let replicator: Arc<dyn Replicator> =
        Arc::new(LocalReplicator::open(&dir.join("gov")).expect("governance store"));
    replicator
        .propose(Command::SetProtocolVersion {
            version: OUTBOX_CHARGES_PROTOCOL,
        })
        .await
        .expect("protocol 6");
    let config = || PipelineConfig {
        batch_max: 16,
        propose_delay: Duration::ZERO,
    };
    let start = |outbox: &Arc<Outbox>| {
        let mut stages = tokio::task::JoinSet::new();
        let pipeline = spawn(
            Arc::clone(&replicator),
            Arc::clone(outbox),
            admission(&replicator),
            config(),
            &mut stages,
        );
        (pipeline, stages)
    };
    let outbox = Arc::new(Outbox::open(&dir.join("outbox")).expect("outbox"));
    let id = outbox.id();
    let (pipeline, _stages) = start(&outbox);
    let usage = send_two_an_hour_apart(&pipeline, &replicator, &outbox).await;
    assert_eq!(usage(), 2);
    assert!(replicator
        .state()
        .read()
        .outbox_marks()
        .mark(1, id)
        .is_some());
    // The kill, and the applied mark lost: the next start replays both charges.
    pipeline.task.abort();
    std::fs::remove_file(dir.join("outbox").join("applied")).expect("applied mark");
    let outbox = Arc::new(Outbox::open(&dir.join("outbox")).expect("outbox"));
    assert_eq!(
        (outbox.id(), outbox.len()),
        (id, 2),
        "same outbox, both replayed"
    );
    let (pipeline, _stages) = start(&outbox);
    pipeline.close.send(()).expect("pipeline running");
    pipeline.task.await.expect("pipeline task");
    assert_eq!(usage(), 2, "no replayed charge counted twice");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A single node snapshots (and purges its log) once the commands since the last
/// snapshot take `SNAPSHOT_EVERY_BYTES`, long before `SNAPSHOT_EVERY` commands: the log
/// lives in memory until purged.
#[tokio::test]
async fn a_log_of_large_batches_is_purged_by_its_bytes() {
    use tollgate_raft::store::{SNAPSHOT_EVERY, SNAPSHOT_EVERY_BYTES};
    let dir = temp_dir("snapshot-bytes");
    let replicator = LocalReplicator::open(&dir.join("gov")).expect("governance store");
    let batch = |b: u64| Command::NodeChargeBatch {
        node: 1,
        charges: (0..256).map(|n| pending(b * 256 + n).charge).collect(),
    };
    let per_batch = tollgate_raft::codec::encode(&batch(0))
        .expect("encodes")
        .len() as u64;
    let batches = SNAPSHOT_EVERY_BYTES / per_batch + 2;
    assert!(
        batches < SNAPSHOT_EVERY / 2,
        "{batches} batches of {per_batch} bytes"
    );
    for b in 0..batches {
        replicator.propose(batch(b)).await.expect("applied");
    }
    let mut snapshot_index = 0;
    for _ in 0..500 {
        snapshot_index = replicator.status().snapshot_index;
        if snapshot_index > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(snapshot_index > 0, "no snapshot after {batches} batches");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
