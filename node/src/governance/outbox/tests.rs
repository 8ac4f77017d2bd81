//! Unit tests of the outbox: round trips, torn tails, rotation, replay positions.

use super::record::{crc32, HEADER_BYTES};
use super::*;
use tollgate_proto::{RequestId, Usage, Usd};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-outbox-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn charge(n: u64) -> Charge {
    Charge {
        request_id: RequestId(format!("req_{n}")),
        key_id: "vk_test".into(),
        provider_config_id: None,
        model: "claude-test".into(),
        usage: Usage {
            input_tokens: n,
            ..Usage::default()
        },
        cost: Usd(n),
        at_ms: 1_700_000_000_000 + n,
    }
}

/// Appends charges `ns` and returns the position of each.
fn append(outbox: &Outbox, ns: std::ops::Range<u64>) -> Vec<Position> {
    ns.map(|n| {
        let record = Record::encode(&charge(n)).expect("encodable");
        outbox.append(&record, |written| written.expect("written"))
    })
    .collect()
}

fn replayed(outbox: &Outbox) -> Vec<u64> {
    outbox
        .take_replay()
        .iter()
        .map(|r| r.charge.cost.0)
        .collect()
}

/// The segments on disk, by number.
fn segments_on_disk(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(dir)
        .expect("outbox dir")
        .filter_map(|e| SegmentId::parse(e.ok()?.file_name().to_str()?))
        .map(|id| id.0)
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn charges_written_and_synced_are_replayed_in_order_then_deleted_once_applied() {
    let dir = temp_dir("roundtrip");
    let outbox = Outbox::open(&dir).expect("open");
    assert!(outbox.take_replay().is_empty());
    let positions = append(&outbox, 0..3);
    outbox.sync(&[positions[0].segment]).await.expect("sync");
    assert_eq!(outbox.len(), 3);
    drop(outbox);

    let outbox = Outbox::open(&dir).expect("reopen");
    assert_eq!(outbox.len(), 3);
    let replay = outbox.take_replay();
    let costs: Vec<u64> = replay.iter().map(|r| r.charge.cost.0).collect();
    assert_eq!(costs, [0, 1, 2]);
    assert_eq!(replay[1].charge, charge(1));
    assert_eq!(replay[1].position, positions[1]);
    assert!(outbox.take_replay().is_empty(), "the replay is taken once");
    // New records go to a new segment after the replayed one.
    let new = append(&outbox, 3..4);
    assert_eq!(new[0].segment.0, 2);
    outbox.applied(replay.iter().map(|r| r.position));
    assert_eq!(segments_on_disk(&dir), [2]);
    assert_eq!(outbox.len(), 1);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_torn_or_corrupt_tail_loses_only_what_follows_it() {
    fn check(tag: &str, damage: impl FnOnce(&mut Vec<u8>), expect: &[u64]) {
        let dir = temp_dir(&format!("torn-{tag}"));
        let outbox = Outbox::open(&dir).expect("open");
        let positions = append(&outbox, 0..3);
        drop(outbox);
        let path = dir.join(positions[0].segment.file_name());
        let mut bytes = std::fs::read(&path).expect("segment");
        damage(&mut bytes);
        std::fs::write(&path, &bytes).expect("damaged");
        let outbox = Outbox::open(&dir).expect("reopen");
        assert_eq!(replayed(&outbox), expect, "{tag}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
    // The three records have the same length.
    check("short-payload", |b| b.truncate(b.len() - 3), &[0, 1]);
    check("short-header", |b| b.truncate(b.len() / 3 * 2 + 5), &[0, 1]);
    check(
        "garbage",
        |b| b.extend_from_slice(b"\x17garbage after the end"),
        &[0, 1, 2],
    );
    check(
        "short-and-garbage",
        |b| {
            b.truncate(b.len() - 3);
            b.extend_from_slice(&[0xAB; 40]);
        },
        &[0, 1],
    );
    check(
        "zero-filled",
        |b| b.extend_from_slice(&[0; 4096]),
        &[0, 1, 2],
    );
    check(
        "huge-length",
        |b| b.extend_from_slice(&[0xFF; HEADER_BYTES + 16]),
        &[0, 1, 2],
    );
    check(
        "flipped-bit",
        |b| {
            let record = b.len() / 3;
            b[record + HEADER_BYTES + 2] ^= 0x10;
        },
        &[0],
    );
}

#[tokio::test]
async fn segments_rotate_and_are_deleted_once_not_current_and_applied() {
    let dir = temp_dir("rotate");
    let record_bytes = Record::encode(&charge(0)).expect("encodable").bytes.len() as u64;
    // Two records fill a segment.
    let outbox = Outbox::open_with(&dir, record_bytes + 1, None, false).expect("open");
    let p = append(&outbox, 0..5);
    let ids: Vec<u64> = p.iter().map(|p| p.segment.0).collect();
    assert_eq!(ids, [1, 1, 2, 2, 3]);
    assert_eq!(segments_on_disk(&dir), [1, 2, 3]);
    outbox
        .sync(&[p[0].segment, p[2].segment, p[4].segment])
        .await
        .expect("sync");

    outbox.applied([p[0]]);
    assert_eq!(
        segments_on_disk(&dir),
        [1, 2, 3],
        "segment 1 holds a charge"
    );
    outbox.applied([p[1], p[2]]);
    assert_eq!(segments_on_disk(&dir), [2, 3]);
    outbox.applied([p[3], p[4]]);
    assert_eq!(segments_on_disk(&dir), [3], "the current segment stays");
    assert!(outbox.is_empty());
    outbox.seal();
    assert!(
        segments_on_disk(&dir).is_empty(),
        "a clean stop leaves none"
    );
    // An append after the seal still lands in a (new) segment.
    assert_eq!(append(&outbox, 5..6)[0].segment.0, 4);
    drop(outbox);
    let outbox = Outbox::open(&dir).expect("reopen");
    assert_eq!(replayed(&outbox), [5]);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_charge_written_but_never_synced_survives_a_killed_process() {
    let dir = temp_dir("kill");
    let outbox = Outbox::open(&dir).expect("open");
    append(&outbox, 0..2);
    // What `kill -9` leaves: no sync, no seal, the records only in the OS.
    drop(outbox);
    let outbox = Outbox::open(&dir).expect("reopen");
    assert_eq!(replayed(&outbox), [0, 1]);
    assert_eq!(outbox.len(), 2);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn only_what_follows_the_last_applied_charge_is_replayed() {
    let dir = temp_dir("mark");
    let outbox = Outbox::open(&dir).expect("open");
    let p = append(&outbox, 0..3);
    outbox.applied([p[0], p[1]]);
    drop(outbox);
    let outbox = Outbox::open(&dir).expect("reopen");
    let replay = outbox.take_replay();
    assert_eq!(replay.len(), 1);
    assert_eq!(replay[0].charge, charge(2));
    // Segment numbers keep growing after a clean stop, so no new segment can pass
    // for one before the applied position.
    outbox.applied(replay.iter().map(|r| r.position));
    outbox.seal();
    drop(outbox);
    assert!(segments_on_disk(&dir).is_empty());
    let outbox = Outbox::open(&dir).expect("reopen");
    assert_eq!(append(&outbox, 3..4)[0].segment.0, 2);
    drop(outbox);
    let outbox = Outbox::open(&dir).expect("reopen");
    assert_eq!(replayed(&outbox), [3]);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_charge_in_two_segments_is_replayed_once() {
    let dir = temp_dir("dedupe");
    let outbox = Outbox::open(&dir).expect("open");
    append(&outbox, 0..2);
    outbox.seal();
    append(&outbox, 1..3);
    drop(outbox);
    let outbox = Outbox::open(&dir).expect("reopen");
    assert_eq!(replayed(&outbox), [0, 1, 2]);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn names_positions_and_checksums() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
    let id = SegmentId(42);
    assert_eq!(id.file_name(), "00000000000000000042.log");
    assert_eq!(SegmentId::parse(&id.file_name()), Some(id));
    for name in [
        "42.log",
        "0000000000000000004x.log",
        "00000000000000000042.tmp",
        "db",
        "99999999999999999999.log",
    ] {
        assert_eq!(SegmentId::parse(name), None, "{name}");
    }
    let position = Position {
        segment: id,
        end: 4_000_123,
    };
    let mut bytes = position.encode();
    assert_eq!(Position::decode(&bytes), Some(position));
    assert_eq!(Position::decode(&bytes[..19]), None);
    bytes[3] ^= 1;
    assert_eq!(Position::decode(&bytes), None);
}

mod properties {
    //! Any segment bytes replay to the charges of their intact prefix: garbage, a torn
    //! record or a zero-filled tail after valid records loses none of them and makes up
    //! none.
    use super::super::record::{parse_records, Record};
    use super::charge;
    use proptest::prelude::*;
    use std::path::Path;

    proptest! {
        #[test]
        fn any_bytes_replay_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let (charges, intact) = parse_records(&bytes, 0, Path::new("fuzz.log"));
            prop_assert!(intact <= bytes.len());
            for (_, end) in &charges {
                prop_assert!(*end as usize <= intact);
            }
        }

        #[test]
        fn valid_records_survive_any_tail(
            ns in prop::collection::vec(any::<u64>(), 0..20),
            tail in prop::collection::vec(any::<u8>(), 0..256),
            torn in any::<prop::sample::Index>(),
            tear in any::<bool>(),
        ) {
            let mut bytes = Vec::new();
            let mut ends = Vec::new();
            for n in &ns {
                let Ok(Record { bytes: record, .. }) = Record::encode(&charge(*n)) else {
                    return Err(TestCaseError::fail("encode"));
                };
                bytes.extend_from_slice(&record);
                ends.push(bytes.len() as u64);
            }
            let valid = bytes.len();
            // A torn last record, or random garbage, after them.
            if tear {
                let n = ns.last().copied().unwrap_or(0);
                let Ok(Record { bytes: record, .. }) = Record::encode(&charge(n.wrapping_add(1))) else {
                    return Err(TestCaseError::fail("encode"));
                };
                bytes.extend_from_slice(&record[..torn.index(record.len())]);
            } else {
                bytes.extend_from_slice(&tail);
            }
            let (charges, intact) = parse_records(&bytes, 0, Path::new("fuzz.log"));
            prop_assert!(intact >= valid);
            let got: Vec<u64> = charges.iter().take(ns.len()).filter_map(|(c, _)| c.charge()).map(|c| c.usage.input_tokens).collect();
            prop_assert_eq!(got, ns.clone());
            let got_ends: Vec<u64> = charges.iter().take(ns.len()).map(|(_, e)| *e).collect();
            prop_assert_eq!(got_ends, ends);
        }
    }
}

mod intents {
    //! Intents and `Done`s: an intent without its end is an orphan at the next start, and
    //! what a request log reads is kept until it has read it.
    use super::*;
    use tollgate_proto::records::RequestRecord;
    use tollgate_raft::codec;

    fn record(n: u64) -> RequestRecord {
        RequestRecord {
            request_id: RequestId(format!("req_{n}")),
            ..RequestRecord::default()
        }
    }

    #[test]
    fn a_dones_record_is_read_past_its_charge() {
        let record = RequestRecord {
            request_id: RequestId("req_9".into()),
            model: Some("claude-test".into()),
            guardrails: vec!["g1".into()],
            ..RequestRecord::default()
        };
        for charge in [
            None,
            Some(Charge {
                provider_config_id: Some("pc_test".into()),
                ..charge(9)
            }),
        ] {
            let done = Done {
                charge,
                record: record.clone(),
            };
            let framed = Record::done(&done, Vec::new()).expect("encodable").bytes;
            let read = super::super::record::done_record(true, &framed[HEADER_BYTES..])
                .expect("readable")
                .expect("a done");
            assert_eq!(read, codec::encode(&record).expect("encodes").as_slice());
        }
        let intent = Record::intent(&Intent {
            record,
            key_id: "vk_test".into(),
            provider_config_id: "pc_test".into(),
            model: "claude-test".into(),
            reserved: Usd(1),
        })
        .expect("encodable")
        .bytes;
        assert_eq!(
            super::super::record::done_record(true, &intent[HEADER_BYTES..]),
            Ok(None)
        );
    }

    fn intent(outbox: &Outbox, n: u64) -> SegmentId {
        let intent = Intent {
            record: record(n),
            key_id: "vk_test".into(),
            provider_config_id: "pc_test".into(),
            model: "claude-test".into(),
            reserved: Usd(100 + n),
        };
        let r = Record::intent(&intent).expect("encodable");
        outbox.append(&r, |w| w.expect("written")).segment
    }

    fn done(outbox: &Outbox, n: u64, charged: bool, closes: Vec<SegmentId>) -> Position {
        let done = Done {
            charge: charged.then(|| charge(n)),
            record: record(n),
        };
        let r = Record::done(&done, closes).expect("encodable");
        outbox.append(&r, |w| w.expect("written"))
    }

    #[test]
    fn an_intent_without_its_end_is_an_orphan_at_the_next_start() {
        let dir = temp_dir("orphans");
        {
            let outbox = Outbox::open(&dir).expect("open");
            let a = intent(&outbox, 1);
            intent(&outbox, 2);
            done(&outbox, 1, true, vec![a]);
            // Killed: no seal.
        }
        let outbox = Outbox::open(&dir).expect("open");
        let orphans = outbox.take_orphans();
        let ids: Vec<&str> = orphans
            .iter()
            .map(|o| o.intent.record.request_id.as_str())
            .collect();
        assert_eq!(ids, vec!["req_2"]);
        assert_eq!(orphans[0].intent.reserved, Usd(102));
        // The finished request's charge is replayed; the orphan's is the node's to make.
        assert_eq!(replayed(&outbox), vec![1]);
        assert!(outbox.take_orphans().is_empty(), "orphans are taken once");
    }

    #[test]
    fn a_segment_with_an_open_intent_keeps_it_and_everything_after() {
        let dir = temp_dir("open-intent");
        let record_bytes = Record::encode(&charge(0)).expect("encodable").bytes.len() as u64;
        // Segments of about two records.
        let outbox = Outbox::open_with(&dir, 2 * record_bytes, None, false).expect("open");
        let long = intent(&outbox, 1);
        let mut positions = Vec::new();
        for n in 2..8 {
            let i = intent(&outbox, n);
            positions.push(done(&outbox, n, true, vec![i]));
        }
        outbox.applied(positions.clone());
        assert!(
            segments_on_disk(&dir).contains(&long.0),
            "the open intent's segment went"
        );
        let before = segments_on_disk(&dir).len();
        assert!(before >= 3);
        // Its end lets every applied segment go but the current one.
        let end = done(&outbox, 1, false, vec![long]);
        outbox.applied(Vec::new());
        outbox.seal();
        assert!(
            segments_on_disk(&dir).len() <= 1,
            "{:?} after {end:?}",
            segments_on_disk(&dir)
        );
        let outbox = Outbox::open(&dir).expect("open");
        assert!(outbox.take_orphans().is_empty());
    }

    #[test]
    fn a_request_log_reads_entries_in_order_and_segments_wait_for_it() {
        let dir = temp_dir("logged");
        let outbox = Outbox::open_logged(&dir, None).expect("open");
        let i = intent(&outbox, 1);
        let p1 = done(&outbox, 1, true, vec![i]);
        let p2 = done(&outbox, 2, false, Vec::new());
        let entries = outbox.read_after(None).expect("read");
        let records: Vec<Option<RequestRecord>> = entries
            .iter()
            .map(|(e, _)| e.as_ref().map(|r| codec::decode(r).expect("a record")))
            .collect();
        // The intent is not read; of each done, its record (after a charge, or none).
        let ids: Vec<Option<&str>> = records
            .iter()
            .map(|r| r.as_ref().map(|r| r.request_id.as_str()))
            .collect();
        assert_eq!(ids, vec![None, Some("req_1"), Some("req_2")]);
        assert_eq!(entries[1].1, p1);
        assert_eq!(entries.last().map(|e| e.1), Some(p2));
        assert!(outbox.read_after(Some(p2)).expect("read").is_empty());
        assert_eq!(outbox.read_after(Some(p1)).expect("read").len(), 1);
        // Applied and sealed, but not logged: the segment stays.
        outbox.applied(vec![p1]);
        outbox.seal();
        assert_eq!(segments_on_disk(&dir).len(), 1);
        outbox.logged(p2);
        assert!(segments_on_disk(&dir).is_empty());
    }
}

/// An outbox keeps the id it chose when made; one made anew in the same place chooses
/// another, and a damaged id stops the start rather than pass for a new outbox.
#[test]
fn an_outbox_keeps_its_id_and_a_new_one_chooses_another() {
    let dir = temp_dir("id");
    let id = Outbox::open(&dir).expect("open").id();
    assert_eq!(Outbox::open(&dir).expect("reopen").id(), id);
    assert!(!dir.join(format!("{}.new", files::ID_FILE)).exists());
    std::fs::remove_dir_all(&dir).expect("wipe");
    assert_ne!(Outbox::open(&dir).expect("made anew").id(), id);
    let simulated = temp_dir("id-simulated");
    assert_eq!(
        Outbox::open_simulated(&simulated, None).expect("open").id(),
        1
    );
    let path = dir.join(files::ID_FILE);
    let mut bytes = std::fs::read(&path).expect("id file");
    bytes[0] ^= 1;
    std::fs::write(&path, &bytes).expect("damage");
    assert!(matches!(Outbox::open(&dir), Err(OutboxError::Io { .. })));
    std::fs::remove_dir_all(&dir).expect("cleanup");
    std::fs::remove_dir_all(&simulated).expect("cleanup");
}
