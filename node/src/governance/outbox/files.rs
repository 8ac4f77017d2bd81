//! The outbox's two small files beside its segments: its id (`ID_FILE`) and the
//! position of the last charge applied (`APPLIED_FILE`).

use super::error::io_at;
use super::record::{crc32, Position};
use super::OutboxError;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

/// The file holding the position of the last charge applied: segment (u64 LE), offset
/// past its record (u64 LE), CRC-32 of those 16 bytes (u32 LE). Overwritten in place
/// and fsynced after every applied batch (off the async threads), so not even a power
/// loss can make a later start replay charges the state machine may have forgotten.
pub(super) const APPLIED_FILE: &str = "applied";

/// The file holding the outbox's id: a random u64 (LE) chosen when the outbox was made,
/// then the CRC-32 of those 8 bytes (u32 LE). Charges are proposed with it and their
/// positions (`Command::OutboxCharges`), so an outbox made anew in the same place (its
/// node's data wiped), whose positions start again, is another outbox to the state.
pub(super) const ID_FILE: &str = "id";

/// `APPLIED_FILE`, open, and the position it holds.
pub(super) struct AppliedMark {
    pub(super) file: File,
    pub(super) through: Option<Position>,
}

/// Opens (or creates) `APPLIED_FILE`. Unreadable, it counts as absent: everything in the
/// outbox is replayed.
pub(super) fn open_applied_mark(path: &Path) -> Result<AppliedMark, OutboxError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_at(path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_at(path))?;
    let through = Position::decode(&bytes);
    if through.is_none() && !bytes.is_empty() {
        tracing::warn!(file = %path.display(), "applied position unreadable; every charge in the outbox is replayed");
    }
    Ok(AppliedMark { file, through })
}

/// Reads the outbox id in `dir`, or makes one: `fixed` (the simulator's, so a run depends
/// only on its seed) or a random one. The file is written whole under another name, synced
/// and renamed, so a crash leaves it whole or absent. An unreadable id stops the node: a
/// new one would let the state take charges replayed from this outbox for new ones.
pub(super) fn outbox_id(dir: &Path, fixed: Option<u64>) -> Result<u64, OutboxError> {
    let path = dir.join(ID_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            return decode_id(&bytes).ok_or_else(|| OutboxError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "corrupt outbox id"),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(&path)(e)),
    }
    let id = match fixed {
        Some(id) => id,
        None => getrandom::u64().map_err(|e| OutboxError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?,
    };
    let mut bytes = id.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32(&bytes).to_le_bytes());
    let temp = dir.join(format!("{ID_FILE}.new"));
    std::fs::write(&temp, &bytes).map_err(io_at(&temp))?;
    if fixed.is_none() {
        File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(io_at(&temp))?;
    }
    std::fs::rename(&temp, &path).map_err(io_at(&path))?;
    if fixed.is_none() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))?;
    }
    Ok(id)
}

fn decode_id(bytes: &[u8]) -> Option<u64> {
    let (id, crc) = (bytes.get(..8)?, bytes.get(8..12)?);
    if bytes.len() != 12 || crc32(id).to_le_bytes() != crc {
        return None;
    }
    Some(u64::from_le_bytes(id.try_into().ok()?))
}
