//! The node-local outbox of charges: an append-only log of segment files. A charge's
//! record is written (into the OS, by one `write(2)`) before `ChargeSender::send` returns,
//! so killing the process loses no charge of an answered request; the writer fsyncs
//! moments later, off the request path, so power loss costs at most those moments. A
//! segment is deleted once it is no longer written to and every charge in it is applied.
//!
//! At start the outbox replays what follows the last charge known applied. Charges are
//! idempotent by request id, but the replicated state remembers ids only for
//! `DEDUP_HORIZON_MS` of charge time, so a replay must not rely on it for old charges:
//! the position of the last charge applied is kept in `DIR/applied` (charges are
//! applied in log order), and what precedes it is never replayed.
//!
//! The outbox also holds the request log's entries: an `Intent` before a request goes to
//! a provider and a `Done` (record and charge) when it finishes. An intent without its
//! `Done` at start is a request its node stopped during (`take_orphans`). When a request
//! log is kept, its writer reads the outbox (`read_after`) and says how far it has
//! written (`logged`). Segments are deleted oldest first, once every charge in them is
//! applied, every intent is done, and the log has them; so a `Done` is never deleted
//! while its intent is kept.
//!
//! A segment is `DIR/NNNNNNNNNNNNNNNNNNNN.log` (its number, zero-padded; numbers only
//! grow). A record is the payload length (u32 LE), the CRC-32 of the payload (u32 LE),
//! then the payload (`record`). Reading a segment stops at its first short or corrupt
//! record: the torn tail a crash can leave.
//!
//! # Layout
//! - `error`: `OutboxError`.
//! - `files`: the outbox's id and the position of the last charge applied.
//! - `record`: the on-disk format (segment names, positions, framed records, CRC-32).
//! - `segments`: the segments appended to and deleted, and what each holds.
//! - `tests`: unit tests.

mod error;
mod files;
mod record;
mod segments;
#[cfg(test)]
mod tests;

use error::io_at;
pub use error::OutboxError;
use files::{open_applied_mark, outbox_id, AppliedMark, APPLIED_FILE, ID_FILE};
use record::{parse_done, RecordKind};
pub use record::{Done, Entry, Intent, Position, Record, SegmentId};
use segments::{read_segment, Log, Segment};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tollgate_proto::Charge;

/// A segment that has reached this size gets no more records; the next goes to a new one.
/// Large enough that creating a file (and fsyncing the directory) is rare, tens of
/// thousands of charges (a record is about 100 bytes); small enough that a segment kept
/// for one unapplied charge wastes little disk.
pub const SEGMENT_MAX_BYTES: u64 = 4 << 20;

/// A charge found in the outbox at start, and where.
pub struct Replayed {
    pub charge: Charge,
    pub position: Position,
}

/// An intent found at start without its `Done`: the node stopped while the request was
/// at the provider. Complete it with a `Done` closing `segment`.
pub struct Orphan {
    pub intent: Intent,
    pub segment: SegmentId,
}

/// What `read_after` gives of one outbox entry: a `Done`'s record encoding (or `None`
/// for another kind), and the position past the entry.
pub type ReadEntry = (Option<Vec<u8>>, Position);

/// Most bytes `read_after` reads in one call (and more than any one record).
pub const READ_MAX_BYTES: usize = 4 << 20;

pub struct Outbox {
    dir: PathBuf,
    segment_max_bytes: u64,
    log: Mutex<Log>,
    /// Charges in the outbox not yet known to be applied; read by the metrics without
    /// taking the lock.
    pending: AtomicUsize,
    /// What the outbox held at start, until the proposer takes it.
    replay: Mutex<Vec<Replayed>>,
    /// Intents without their `Done` at start, until the node completes them.
    orphans: Mutex<Vec<Orphan>>,
    applied: Mutex<AppliedMark>,
    /// A request log's writer reads the outbox: segments wait for it.
    logs: bool,
    /// Under the simulator: no fsync and no hop to a blocking thread, so a run depends
    /// only on its seed. A simulated crash is a process crash, after which what was
    /// written is still in the OS, as in production.
    simulated: bool,
    /// Chosen when the outbox was made (`files::ID_FILE`).
    id: u64,
}

/// A panic while holding a lock leaves at worst a count off by one (a segment kept or
/// replayed once more), never a torn record, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir` and reads what follows the last charge
    /// applied, for `take_replay`. New records go to a new segment after the others.
    pub fn open(dir: &Path) -> Result<Outbox, OutboxError> {
        Outbox::open_with(dir, SEGMENT_MAX_BYTES, None, false)
    }

    /// `open` for a node whose request log reads the outbox and has written what
    /// precedes `logged`.
    pub fn open_logged(dir: &Path, logged: Option<Position>) -> Result<Outbox, OutboxError> {
        Outbox::open_with(dir, SEGMENT_MAX_BYTES, Some(logged), false)
    }

    /// `open` (or `open_logged`, with `logs`) for the simulator: writes are never
    /// fsynced, nothing runs on a blocking thread (see `simulated`), and a new outbox's
    /// id is 1 (the simulator never wipes a node's data, so a node has one outbox).
    pub fn open_simulated(
        dir: &Path,
        logs: Option<Option<Position>>,
    ) -> Result<Outbox, OutboxError> {
        Outbox::open_with(dir, SEGMENT_MAX_BYTES, logs, true)
    }

    /// The id this outbox chose when it was made (`files::ID_FILE`).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    fn open_with(
        dir: &Path,
        segment_max_bytes: u64,
        logs: Option<Option<Position>>,
        simulated: bool,
    ) -> Result<Outbox, OutboxError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let id = outbox_id(dir, simulated.then_some(1))?;
        let mark = open_applied_mark(&dir.join(APPLIED_FILE))?;
        let through = mark.through;
        let mut found = Vec::new();
        let mut foreign = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
            let name = entry.map_err(io_at(dir))?.file_name();
            match name.to_str().and_then(SegmentId::parse) {
                Some(id) => found.push(id),
                None if name == APPLIED_FILE || name == ID_FILE => {}
                None => foreign.push(name),
            }
        }
        if !foreign.is_empty() {
            // For instance the sled database an earlier version kept here.
            tracing::warn!(dir = %dir.display(), files = ?foreign, "files in the outbox directory that are not segments are ignored");
        }
        found.sort_unstable();
        let after = |id: Option<SegmentId>| id.map_or(1, |id| id.0.saturating_add(1));
        let next = after(found.last().copied()).max(after(through.map(|t| t.segment)));
        let mut seen = HashSet::new();
        let mut segments = BTreeMap::new();
        let mut replay = Vec::new();
        // Intents not (yet) followed by their `Done`, by request id.
        let mut open: HashMap<String, Orphan> = HashMap::new();
        for id in found {
            let path = dir.join(id.file_name());
            // Never skipped when unreadable: the applied mark would move past its charges
            // and a later start would delete it unread. The node does not start until it is.
            let (records, end) = read_segment(&path)?;
            let mut pending = 0;
            for (entry, end) in records {
                let position = Position { segment: id, end };
                let charge = match entry {
                    Entry::Intent(intent) => {
                        let request_id = intent.record.request_id.0.clone();
                        open.insert(
                            request_id,
                            Orphan {
                                intent,
                                segment: id,
                            },
                        );
                        continue;
                    }
                    Entry::Done(done) => {
                        open.remove(done.record.request_id.as_str());
                        match done.charge {
                            Some(charge) => charge,
                            None => continue,
                        }
                    }
                    Entry::Charge(charge) => charge,
                };
                if through.is_some_and(|t| position <= t) {
                    continue;
                }
                if seen.insert(charge.request_id.clone()) {
                    pending += 1;
                    replay.push(Replayed { charge, position });
                }
            }
            segments.insert(
                id,
                Segment {
                    pending,
                    intents: 0,
                    end,
                    file: None,
                },
            );
        }
        let mut orphans: Vec<Orphan> = open.into_values().collect();
        orphans.sort_by(|a, b| a.intent.record.request_id.cmp(&b.intent.record.request_id));
        for orphan in &orphans {
            if let Some(segment) = segments.get_mut(&orphan.segment) {
                segment.intents += 1;
            }
        }
        let mut log = Log {
            current: None,
            segments,
            next,
            dir_unsynced: false,
            doomed: Vec::new(),
            logged: logs.flatten(),
        };
        log.sweep(logs.is_some());
        let doomed = std::mem::take(&mut log.doomed);
        let outbox = Outbox {
            dir: dir.to_owned(),
            segment_max_bytes,
            log: Mutex::new(log),
            pending: AtomicUsize::new(replay.len()),
            replay: Mutex::new(replay),
            orphans: Mutex::new(orphans),
            applied: Mutex::new(mark),
            logs: logs.is_some(),
            simulated,
            id,
        };
        for id in doomed {
            outbox.delete(id);
        }
        Ok(outbox)
    }

    /// The intents found at start without their `Done` (once; later calls get none).
    pub fn take_orphans(&self) -> Vec<Orphan> {
        std::mem::take(&mut *lock(&self.orphans))
    }

    /// The charges found at start (once; later calls get none), in log order without
    /// duplicates. Report each through `applied` once it is.
    pub fn take_replay(&self) -> Vec<Replayed> {
        std::mem::take(&mut *lock(&self.replay))
    }

    /// Appends `record` to the current segment (into the OS; `sync` makes it durable) and
    /// calls `then` with where it went, or why it could not be written, while still
    /// holding the lock: the order of `then` calls is the order of the log.
    pub fn append<R>(
        &self,
        record: &Record,
        then: impl FnOnce(Result<Position, OutboxError>) -> R,
    ) -> R {
        let mut log = lock(&self.log);
        let written = log.append(&self.dir, self.segment_max_bytes, record);
        if written.is_ok() && record.kind == RecordKind::Charge {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        then(written)
    }

    /// Records that the request log has every entry up to `position`, and deletes the
    /// segments nothing needs any more.
    pub fn logged(&self, position: Position) {
        let doomed = {
            let mut log = lock(&self.log);
            if log.logged < Some(position) {
                log.logged = Some(position);
            }
            log.sweep(self.logs);
            std::mem::take(&mut log.doomed)
        };
        for id in doomed {
            self.delete(id);
        }
    }

    /// The position of the last record appended, if any record is in the outbox.
    pub fn appended(&self) -> Option<Position> {
        let log = lock(&self.log);
        log.segments
            .iter()
            .rev()
            .find(|(_, s)| s.end > 0)
            .map(|(id, s)| Position {
                segment: *id,
                end: s.end,
            })
    }

    /// The records of the `Done`s after `after` (from the first segment when `None`),
    /// in log order, up to about `READ_MAX_BYTES`, each as its encoding (a
    /// `RequestRecord`'s) with the position past it; every other entry is a `None` with
    /// its position (not decoded: the request log reads only `Done`s' records).
    pub fn read_after(&self, after: Option<Position>) -> Result<Vec<ReadEntry>, OutboxError> {
        let spans: Vec<(SegmentId, u64, u64)> = {
            let log = lock(&self.log);
            log.segments
                .iter()
                .filter_map(|(id, s)| {
                    let start = match after {
                        Some(a) if a.segment == *id => a.end,
                        Some(a) if a.segment > *id => return None,
                        _ => 0,
                    };
                    (start < s.end).then_some((*id, start, s.end))
                })
                .collect()
        };
        let mut entries = Vec::new();
        let mut budget = READ_MAX_BYTES as u64;
        for (id, start, end) in spans {
            if budget == 0 {
                break;
            }
            let path = self.dir.join(id.file_name());
            let file = File::open(&path).map_err(io_at(&path))?;
            let want = (end - start).min(budget.max(record::RECORD_MAX_BYTES as u64 + 16));
            let mut bytes = vec![0u8; want as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, start)
                .map_err(io_at(&path))?;
            let (records, intact) = parse_done(&bytes, start, &path);
            budget = budget.saturating_sub(intact as u64);
            let cut = (intact as u64) < want;
            entries.extend(
                records
                    .into_iter()
                    .map(|(entry, end)| (entry, Position { segment: id, end })),
            );
            if cut {
                // The rest of this segment (read in a later call) comes before the next.
                break;
            }
        }
        Ok(entries)
    }

    /// Makes the records appended so far to `segments` durable, and the directory entry
    /// of every segment created since the last sync. The fsyncs run off the async threads.
    pub async fn sync(&self, segments: &[SegmentId]) -> Result<(), OutboxError> {
        let (files, dir_unsynced) = {
            let mut log = lock(&self.log);
            let files: Vec<(SegmentId, Arc<File>)> = segments
                .iter()
                .filter_map(|id| Some((*id, log.segments.get(id)?.file.clone()?)))
                .collect();
            (files, std::mem::take(&mut log.dir_unsynced))
        };
        if (files.is_empty() && !dir_unsynced) || self.simulated {
            return Ok(());
        }
        let dir = self.dir.clone();
        let synced = tokio::task::spawn_blocking(move || -> Result<(), OutboxError> {
            if dir_unsynced {
                File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_at(&dir))?;
            }
            for (id, file) in files {
                file.sync_data().map_err(io_at(&dir.join(id.file_name())))?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(OutboxError::Join(e)));
        if synced.is_err() && dir_unsynced {
            lock(&self.log).dir_unsynced = true;
        }
        synced
    }

    /// Records that the charges at these positions are applied (the proposer applies in
    /// log order, so the last one says that everything before it is), and deletes every
    /// segment that is not current and holds no unapplied charge.
    pub fn applied(&self, positions: impl IntoIterator<Item = Position>) {
        let mut last = None;
        let doomed = {
            let mut log = lock(&self.log);
            for position in positions {
                last = last.max(Some(position));
                let id = position.segment;
                let Some(segment) = log.segments.get_mut(&id) else {
                    debug_assert!(false, "applied charge of unknown segment {id:?}");
                    continue;
                };
                segment.pending = segment.pending.saturating_sub(1);
                self.pending.fetch_sub(1, Ordering::Relaxed);
            }
            log.sweep(self.logs);
            std::mem::take(&mut log.doomed)
        };
        if let Some(last) = last {
            self.mark_applied(last);
        }
        for id in doomed {
            self.delete(id);
        }
    }

    fn mark_applied(&self, position: Position) {
        let mut mark = lock(&self.applied);
        if mark.through >= Some(position) {
            debug_assert!(false, "charges applied out of log order at {position:?}");
            return;
        }
        let mut file = &mark.file;
        // Synced: a mark that power loss takes back would replay charges that may be older
        // than the state machine's dedup horizon by the time the node is back.
        let written = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&position.encode()))
            .and_then(|_| match self.simulated {
                true => Ok(()),
                false => file.sync_data(),
            });
        match written {
            Ok(()) => mark.through = Some(position),
            Err(e) => {
                tracing::warn!(error = %e, "applied position not recorded; a restart replays more charges than it needs")
            }
        }
    }

    /// Stops appending to the current segment, and deletes it if every charge in it is
    /// applied: called at shutdown, so that a clean stop leaves no segment behind.
    pub fn seal(&self) {
        let doomed = {
            let mut log = lock(&self.log);
            log.current = None;
            log.sweep(self.logs);
            std::mem::take(&mut log.doomed)
        };
        for id in doomed {
            self.delete(id);
        }
    }

    fn delete(&self, id: SegmentId) {
        let path = self.dir.join(id.file_name());
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(segment = %path.display(), "applied outbox segment deleted"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "applied outbox segment not deleted; it is left on disk")
            }
        }
    }

    /// Charges in the outbox not yet known to be applied.
    pub fn len(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
