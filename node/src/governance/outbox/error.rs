//! `OutboxError`: what can go wrong writing or reading the outbox.

use std::io;
use std::path::{Path, PathBuf};
use tollgate_raft::codec;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox i/o failed on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("charge cannot be encoded for the outbox")]
    Codec(#[from] codec::CodecError),
    #[error("charge record of {0} bytes is over the outbox limit")]
    TooLarge(usize),
    #[error("outbox sync task failed")]
    Join(#[from] tokio::task::JoinError),
}

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_owned(),
        source,
    }
}
