//! The segments the outbox appends to and deletes: what each holds (charges to apply,
//! intents to end, how far it is written) and when nothing needs it any more.

use super::error::io_at;
use super::record::{parse_records, RecordKind};
use super::{Entry, OutboxError, Position, Record, SegmentId};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

pub(super) struct Log {
    /// The segment appends go to. None at start, after a failed write and at rotation:
    /// the next append creates a new segment, so no record ever follows a torn one.
    pub(super) current: Option<Current>,
    /// Every segment on disk that holds an unapplied charge, and the current one.
    pub(super) segments: BTreeMap<SegmentId, Segment>,
    pub(super) next: u64,
    /// A segment was created since the directory was last fsynced.
    pub(super) dir_unsynced: bool,
    /// Segments no longer needed, deleted by the next `applied` or `logged` (so no
    /// request waits for an unlink).
    pub(super) doomed: Vec<SegmentId>,
    /// How far the request log has read (`logged`).
    pub(super) logged: Option<Position>,
}

pub(super) struct Current {
    pub(super) id: SegmentId,
    pub(super) file: Arc<File>,
    pub(super) bytes: u64,
}

pub(super) struct Segment {
    /// Charges in it not yet applied.
    pub(super) pending: u64,
    /// Intents in it not yet done.
    pub(super) intents: u64,
    /// Offset past its last intact record.
    pub(super) end: u64,
    /// Open for appending if created by this process (the writer fsyncs through it);
    /// none for a segment found at start.
    pub(super) file: Option<Arc<File>>,
}

impl Log {
    pub(super) fn append(
        &mut self,
        dir: &Path,
        segment_max_bytes: u64,
        record: &Record,
    ) -> Result<Position, OutboxError> {
        // Closed even if the write fails: the request is over, and its charge is still
        // proposed; an intent left open would be charged again at the next start.
        for id in &record.closes {
            self.close_intent(*id);
        }
        let mut current = match self.current.take() {
            Some(current) if current.bytes < segment_max_bytes => current,
            _ => self.create(dir)?,
        };
        if let Err(source) = (&*current.file).write_all(&record.bytes) {
            // Part of the record may be in the file: nothing more goes after it (the
            // segment's end stays before it, so the log never reads it).
            return Err(io_at(&dir.join(current.id.file_name()))(source));
        }
        current.bytes += record.bytes.len() as u64;
        let position = Position {
            segment: current.id,
            end: current.bytes,
        };
        match self.segments.get_mut(&current.id) {
            Some(segment) => {
                segment.end = current.bytes;
                match record.kind {
                    RecordKind::Charge => segment.pending += 1,
                    RecordKind::Intent => segment.intents += 1,
                    RecordKind::Free => {}
                }
            }
            None => debug_assert!(false, "current segment {:?} not tracked", current.id),
        }
        self.current = Some(current);
        Ok(position)
    }

    pub(super) fn close_intent(&mut self, id: SegmentId) {
        match self.segments.get_mut(&id) {
            Some(segment) => segment.intents = segment.intents.saturating_sub(1),
            None => debug_assert!(false, "intent closed in unknown segment {id:?}"),
        }
    }

    /// Deletes segments from the oldest while nothing needs them: not current, every
    /// charge applied, every intent done and, when a request log reads the outbox, all
    /// of it logged. Oldest first, so that what follows a kept segment is kept too.
    pub(super) fn sweep(&mut self, logs: bool) {
        let current = self.current.as_ref().map(|c| c.id);
        while let Some((&id, segment)) = self.segments.first_key_value() {
            let logged = !logs
                || self.logged
                    >= Some(Position {
                        segment: id,
                        end: segment.end,
                    });
            if Some(id) == current || segment.pending > 0 || segment.intents > 0 || !logged {
                break;
            }
            self.segments.remove(&id);
            self.doomed.push(id);
        }
    }

    /// Creates the next segment. Its directory entry is fsynced by the next `sync`, with
    /// the first records in it, rather than here on the request path.
    fn create(&mut self, dir: &Path) -> Result<Current, OutboxError> {
        let id = SegmentId(self.next);
        self.next = self.next.saturating_add(1);
        let path = dir.join(id.file_name());
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_at(&path))?;
        let file = Arc::new(file);
        self.segments.insert(
            id,
            Segment {
                pending: 0,
                intents: 0,
                end: 0,
                file: Some(Arc::clone(&file)),
            },
        );
        self.dir_unsynced = true;
        Ok(Current { id, file, bytes: 0 })
    }
}

/// Reads the entries of one segment, each with the offset past its record, and the
/// length of its intact prefix, fsyncing the segment first: a process killed before its
/// last fsync left records only in the OS, and they are about to be proposed.
pub(super) fn read_segment(path: &Path) -> Result<(Vec<(Entry, u64)>, u64), OutboxError> {
    let mut file = File::open(path).map_err(io_at(path))?;
    if let Err(e) = file.sync_data() {
        // Still replayed: a power loss before they are applied is the only risk.
        tracing::warn!(segment = %path.display(), error = %e, "outbox segment not fsynced at start");
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_at(path))?;
    let (records, intact) = parse_records(&bytes, 0, path);
    if intact < bytes.len() {
        tracing::warn!(segment = %path.display(), intact_bytes = intact, ignored_bytes = bytes.len() - intact, "outbox segment ends in a torn or corrupt record; the rest is ignored");
    }
    Ok((records, intact as u64))
}
