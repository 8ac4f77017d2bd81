//! The request log's side of the peer transport: another node's query, lookup or stats
//! question answered from this node's store (off the async threads). A node that keeps
//! no request log answers with nothing found.

use super::query;
use super::RequestLog;
use crate::cluster::transport::{PeerRequest, PeerResponse, RequestContext, Route, RouteFuture};
use std::sync::Arc;
use tollgate_proto::peer::{PeerError, KIND_LOGS, KIND_LOG_GET, KIND_LOG_VERIFY, KIND_STATS};
use tollgate_proto::records::{LogEntry, LogFilter, LogPage, StatsGroup, StatsQuery};
use tollgate_proto::RequestId;
use tollgate_raft::codec;

/// The kinds this route answers.
pub const KINDS: [u16; 4] = [KIND_LOGS, KIND_LOG_GET, KIND_STATS, KIND_LOG_VERIFY];

pub struct LogsRoute {
    pub log: Option<Arc<RequestLog>>,
}

fn malformed(e: codec::CodecError) -> PeerError {
    PeerError::Malformed {
        reason: e.to_string(),
    }
}

fn failed(e: impl std::fmt::Debug) -> PeerError {
    PeerError::Rejected {
        reason: format!("request log: {e:?}"),
    }
}

/// Answers one question from `log` (the caller's own node uses this too).
pub fn answer(log: Option<&RequestLog>, kind: u16, body: &[u8]) -> Result<Vec<u8>, PeerError> {
    let encode = |bytes: Result<Vec<u8>, codec::CodecError>| bytes.map_err(failed);
    match kind {
        KIND_LOGS => {
            let filter: LogFilter = codec::decode(body).map_err(malformed)?;
            let page = match log {
                Some(log) => query::query(&log.store, &filter).map_err(failed)?,
                None => LogPage::default(),
            };
            encode(codec::encode(&page))
        }
        KIND_LOG_GET => {
            let id: RequestId = codec::decode(body).map_err(malformed)?;
            let entry: Option<LogEntry> = match log {
                Some(log) => log.store.get(id.as_str()).map_err(failed)?,
                None => None,
            };
            encode(codec::encode(&entry))
        }
        KIND_STATS => {
            let stats: StatsQuery = codec::decode(body).map_err(malformed)?;
            let groups: Vec<StatsGroup> = match log {
                Some(log) => log.store.stats(&stats).map_err(failed)?,
                None => Vec::new(),
            };
            encode(codec::encode(&groups))
        }
        KIND_LOG_VERIFY => {
            let anchors: std::collections::BTreeMap<u64, Vec<tollgate_proto::audit::Anchor>> =
                codec::decode(body).map_err(malformed)?;
            let report = match log {
                Some(log) => {
                    let mine = anchors.get(&log.store.node()).cloned().unwrap_or_default();
                    Some(log.store.verify(&mine).map_err(failed)?)
                }
                None => None,
            };
            encode(codec::encode(&report))
        }
        kind => Err(PeerError::UnknownKind { kind }),
    }
}

impl Route for LogsRoute {
    fn answer(&self, _context: RequestContext, request: PeerRequest) -> RouteFuture<'_> {
        let log = self.log.clone();
        Box::pin(async move {
            let kind = request.kind;
            let body = tokio::task::spawn_blocking(move || {
                answer(log.as_deref(), request.kind, &request.body)
            })
            .await
            .map_err(failed)??;
            Ok(PeerResponse { kind, body })
        })
    }
}
