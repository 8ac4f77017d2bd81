//! The node-local durable outbox of charges: a charge is written here (and flushed) right
//! after its request is answered, and removed once the replicated state has applied it.
//! A node that crashes in between replays the outbox at start; charges are idempotent by
//! request id, so a replay can never double a charge.

use std::path::Path;
use tollgate_proto::Charge;
use tollgate_raft::codec;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox i/o failed")]
    Sled(#[from] sled::Error),
    #[error("outbox entry is corrupt")]
    Codec(#[from] codec::CodecError),
}

pub struct Outbox {
    db: sled::Db,
}

impl Outbox {
    pub fn open(dir: &Path) -> Result<Outbox, OutboxError> {
        Ok(Outbox {
            db: sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .open()?,
        })
    }

    /// Writes charges and waits until they are on disk. Concurrent writers share one
    /// fsync (sled's group commit).
    pub async fn put(&self, charges: &[&Charge]) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        for c in charges {
            batch.insert(c.request_id.as_str().as_bytes(), codec::encode(*c)?);
        }
        self.db.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Forgets applied charges. Not flushed: an entry that comes back after a crash is
    /// replayed and ignored as a duplicate.
    pub fn remove<'a>(
        &self,
        request_ids: impl Iterator<Item = &'a str>,
    ) -> Result<(), OutboxError> {
        let mut batch = sled::Batch::default();
        for id in request_ids {
            batch.remove(id.as_bytes());
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Every charge not yet known to be applied, in request-id order.
    pub fn pending(&self) -> Result<Vec<Charge>, OutboxError> {
        self.db
            .iter()
            .values()
            .map(|v| Ok(codec::decode::<Charge>(&v?)?))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.db.len()
    }

    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }
}
