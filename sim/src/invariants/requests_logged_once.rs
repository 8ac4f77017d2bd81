//! Every acknowledged request appears in exactly one node's request log, once: the log
//! of the node that answered it, with the status and cost the client was charged. Read
//! once the cluster settled (a node's writer may still be catching up until then).

use crate::world::{Running, World};
use std::collections::BTreeMap;
use tollgate_node::governance::records::query::{self, PAGE_MAX};
use tollgate_proto::records::{LogCursor, LogFilter, RequestRecord};

/// Every record of a node's log, newest first.
pub(crate) fn records(
    log: &tollgate_node::governance::records::RequestLog,
) -> Result<Vec<RequestRecord>, String> {
    let mut all = Vec::new();
    let mut before: Option<LogCursor> = None;
    loop {
        let filter = LogFilter {
            limit: PAGE_MAX,
            before,
            ..LogFilter::default()
        };
        let page = query::query(&log.store, &filter).map_err(|e| e.to_string())?;
        let last = page.records.last().map(query::cursor_of);
        all.extend(page.records.into_iter().map(|r| r.record));
        before = match (page.more, page.resume) {
            (true, _) => last,
            (false, Some(resume)) => Some(resume),
            (false, None) => return Ok(all),
        };
    }
}

pub fn check_end(world: &World, running: &BTreeMap<u64, Running>) -> Result<(), String> {
    let (acknowledged, on) = {
        let w = world.lock();
        (w.acknowledged.clone(), w.acknowledged_on.clone())
    };
    // Request id → (node, status, cost) of each record found.
    let mut found: BTreeMap<String, Vec<(u64, u16, u64)>> = BTreeMap::new();
    for (id, node) in running {
        let log = node
            .log
            .as_ref()
            .ok_or_else(|| format!("n{id} runs without its request log"))?;
        for r in records(log)? {
            found
                .entry(r.request_id.0.clone())
                .or_default()
                .push((*id, r.status, r.cost.0));
        }
    }
    for (request_id, (_, cost)) in &acknowledged {
        let node = on.get(request_id).copied().unwrap_or_default();
        match found.get(request_id).map(Vec::as_slice) {
            Some([(n, 200, c)]) if *n == node && *c == cost.0 => {}
            Some([]) | None => return Err(format!("{request_id} (answered by n{node}) has no record yet")),
            Some(records) => {
                return Err(format!(
                    "{request_id} (answered by n{node} at {} µ$) is recorded as (node, status, µ$) {records:?}",
                    cost.0
                ))
            }
        }
    }
    Ok(())
}
