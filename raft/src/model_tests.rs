//! Model test of the log backends: seeded random sequences of appends, truncations,
//! purges, vote and committed writes and restarts, applied to `SledLog` and `MemLog`
//! alike; every observable part of the two logs must agree after every step.

use crate::log_backend::LogBackend;
use crate::mem_log::MemLog;
use crate::sled_log::{open_db, SledLog};
use crate::test_support::TempDir;
use crate::typ::{Entry, EntryPayload, LogId, Membership, TollgateNode, Vote};
use openraft::CommittedLeaderId;
use std::collections::{BTreeMap, BTreeSet};
use tollgate_proto::{Command, CustomerId};

/// Each seed is one run; a failure names its seed and step.
const SEEDS: &[u64] = &[
    1,
    2,
    3,
    0x9e37_79b9_7f4a_7c15,
    0xdead_beef,
    42,
    7_777_777,
    0x0123_4567_89ab_cdef,
];
const STEPS_PER_SEED: usize = 150;

/// xorshift64*: enough randomness for choosing operations, and the same on every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // A zero state would stay zero forever.
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn log_id(term: u64, node: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn random_entry(rng: &mut Rng, id: LogId) -> Entry {
    let payload = match rng.between(0, 3) {
        0 => EntryPayload::Blank,
        1 => {
            let voters = BTreeSet::from([1, rng.between(2, 5)]);
            let nodes = voters
                .iter()
                .map(|&n| {
                    let node = TollgateNode {
                        raft_addr: format!("127.0.0.1:{}", 7000 + n),
                        http_addr: format!("127.0.0.1:{}", 8000 + n),
                    };
                    (n, node)
                })
                .collect::<BTreeMap<_, _>>();
            EntryPayload::Membership(Membership::new(vec![voters], nodes))
        }
        _ => EntryPayload::Normal(Command::DeleteCustomer {
            id: CustomerId::from(format!("cus_{}", rng.next() % 1000).as_str()),
        }),
    };
    Entry {
        log_id: id,
        payload,
    }
}

/// Everything a reader can observe of a log.
#[derive(Debug, PartialEq)]
struct Observed {
    entries: Vec<Entry>,
    last_log_id: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

fn observe(b: &impl LogBackend) -> Observed {
    Observed {
        entries: b.read_range(0..u64::MAX).expect("read"),
        last_log_id: b.last_log_id().expect("last"),
        vote: b.read_vote().expect("vote"),
        committed: b.read_committed().expect("committed"),
        last_purged: b.read_last_purged().expect("purged"),
    }
}

enum Op {
    Append(Vec<Entry>),
    Truncate(u64),
    Purge(LogId),
    SaveVote(Vote),
    SaveCommitted(Option<LogId>),
    Restart,
}

/// Does one step on a backend, flushing where `LogStore` does.
fn apply_op(b: &impl LogBackend, op: &Op) {
    match op {
        Op::Append(entries) => {
            b.append(entries).expect("append");
            b.flush().expect("flush");
        }
        Op::Truncate(index) => {
            b.truncate_from(*index).expect("truncate");
            b.flush().expect("flush");
        }
        Op::Purge(id) => {
            b.save_last_purged(id).expect("save purged");
            b.purge_upto(id.index).expect("purge");
            b.flush().expect("flush");
        }
        Op::SaveVote(vote) => {
            b.save_vote(vote).expect("vote");
            b.flush().expect("flush");
        }
        Op::SaveCommitted(c) => b.save_committed(c.as_ref()).expect("committed"),
        Op::Restart => {}
    }
}

/// Picks an operation that keeps the log as Raft keeps it: contiguous, above the purge
/// mark, terms never decreasing along the log.
fn random_op(rng: &mut Rng, now: &Observed) -> Op {
    // After a purge past the last entry (as when a snapshot is installed), the log goes on
    // from the purge mark.
    let last = now.last_log_id.max(now.last_purged);
    let next_index = last.map_or(0, |id| id.index + 1);
    let last_term = last.map_or(0, |id| id.leader_id.term);
    match rng.between(0, 99) {
        0..=39 => {
            let mut term = last_term + rng.between(0, 1);
            let count = rng.between(1, 5);
            let entries = (next_index..next_index + count)
                .map(|index| {
                    term += u64::from(rng.between(0, 9) == 0);
                    let id = log_id(term.max(1), rng.between(1, 3), index);
                    random_entry(rng, id)
                })
                .collect();
            Op::Append(entries)
        }
        40..=54 => match now.entries.first() {
            Some(first) => Op::Truncate(rng.between(first.log_id.index, next_index)),
            None => Op::SaveCommitted(None),
        },
        55..=66 => {
            let n = now.entries.len() as u64;
            if n == 0 || rng.between(0, 4) == 0 {
                Op::Purge(log_id(last_term.max(1), 1, next_index + rng.between(0, 3)))
            } else {
                Op::Purge(now.entries[rng.between(0, n - 1) as usize].log_id)
            }
        }
        67..=78 => {
            let mut vote = Vote::new(rng.between(0, 9), rng.between(1, 3));
            if rng.between(0, 1) == 1 {
                vote.commit();
            }
            Op::SaveVote(vote)
        }
        79..=92 => Op::SaveCommitted(match now.entries.len() {
            0 => None,
            n => Some(now.entries[rng.between(0, n as u64 - 1) as usize].log_id),
        }),
        _ => Op::Restart,
    }
}

/// Opens the log, waiting a little for the lock: sled releases the file lock of a
/// dropped database from its own background thread, so a reopen right after a drop can
/// briefly find it still held.
fn open_sled(dir: &TempDir) -> SledLog {
    let mut tries = 0;
    loop {
        match open_db(dir.path()) {
            Ok(db) => return SledLog::open(&db).expect("open log"),
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open db: {e:?}"),
        }
    }
}

fn run_seed(seed: u64) {
    let mut rng = Rng::new(seed);
    let dir = TempDir::new("model");
    let mut sled = Some(open_sled(&dir));
    let mut mem = MemLog::new();
    for step in 0..STEPS_PER_SEED {
        let now = observe(&mem);
        let op = random_op(&mut rng, &now);
        match &op {
            Op::Restart => {
                // Dropping the last handle closes the database (sled flushes on close);
                // the in-memory log is kept, as a disk would be.
                drop(sled.take());
                sled = Some(open_sled(&dir));
                mem = mem.clone();
            }
            op => {
                apply_op(sled.as_ref().expect("open"), op);
                apply_op(&mem, op);
            }
        }
        let from_sled = observe(sled.as_ref().expect("open"));
        let from_mem = observe(&mem);
        assert_eq!(
            from_sled, from_mem,
            "seed {seed} step {step}: backends differ"
        );
        check_invariants(&from_mem, seed, step);
    }
}

fn check_invariants(o: &Observed, seed: u64, step: usize) {
    for pair in o.entries.windows(2) {
        assert_eq!(
            pair[0].log_id.index + 1,
            pair[1].log_id.index,
            "seed {seed} step {step}: hole in the log"
        );
    }
    if let (Some(purged), Some(first)) = (o.last_purged, o.entries.first()) {
        assert!(
            first.log_id.index > purged.index,
            "seed {seed} step {step}: entry at or below the purge mark"
        );
    }
    assert_eq!(o.last_log_id, o.entries.last().map(|e| e.log_id));
}

#[test]
fn sled_and_mem_logs_agree_under_random_operations() {
    for &seed in SEEDS {
        run_seed(seed);
    }
}

#[test]
fn sled_finishes_a_purge_cut_short_by_a_crash() {
    let dir = TempDir::new("purge-crash");
    let mut rng = Rng::new(5);
    let entries: Vec<Entry> = (1..=6)
        .map(|index| random_entry(&mut rng, log_id(1, 1, index)))
        .collect();
    {
        let log = open_sled(&dir);
        log.append(&entries).expect("append");
        // The purge mark is written first; the crash comes before the entries go.
        log.save_last_purged(&entries[2].log_id).expect("mark");
        log.flush().expect("flush");
    }
    let log = open_sled(&dir);
    let left = log.read_range(0..u64::MAX).expect("read");
    assert_eq!(left, entries[3..].to_vec());
}
