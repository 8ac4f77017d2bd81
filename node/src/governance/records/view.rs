//! A record as the API and the exports show it: the contract's fields (times in RFC
//! 3339, money as decimal dollars), with its place in the node's chain.

use super::rfc3339;
use serde_json::{json, Value};
use tollgate_proto::records::ChainedRecord;
use tollgate_proto::Usd;

/// A record as the API shows it (no secret is in a record to begin with).
pub fn record_view(r: &ChainedRecord) -> Value {
    let rec = &r.record;
    json!({
        "request_id": rec.request_id,
        "time": rfc3339::format(rec.time_ms),
        "time_ms": rec.time_ms,
        "node": rec.node,
        "seq": r.seq,
        "virtual_key_id": rec.virtual_key_id,
        "virtual_key_name": rec.virtual_key_name,
        "user_id": rec.user_id,
        "team_id": rec.team_id,
        "customer_id": rec.customer_id,
        "provider": rec.provider,
        "provider_config_id": rec.provider_config_id,
        "model": rec.model,
        "dialect": rec.dialect,
        "stream": rec.stream,
        "status": rec.status,
        "error_type": rec.error_type,
        "input_tokens": rec.usage.input_tokens,
        "output_tokens": rec.usage.output_tokens,
        "cache_read_tokens": rec.usage.cache_read_input_tokens,
        "cache_write_tokens": rec.usage.cache_creation_input_tokens,
        "cost_usd": Usd::to_string(&rec.cost),
        "latency_ms": rec.latency_ms,
        "ttft_ms": rec.ttft_ms,
        "attempts": rec.attempts,
        "session_id": rec.session_id,
        "user_agent": rec.user_agent,
        "client_ip": rec.client_ip,
        "guardrails": rec.guardrails.iter().map(|g| guardrail_view(g)).collect::<Vec<_>>(),
        "outcome": rec.outcome,
    })
}

/// A guardrail verdict (`guardrail:rule:action:direction:count`) as an object; any
/// other text as it is.
fn guardrail_view(entry: &str) -> serde_json::Value {
    let mut tail = entry.rsplitn(4, ':');
    let (count, direction, action, rest) = (tail.next(), tail.next(), tail.next(), tail.next());
    let split = rest.and_then(|r| r.split_once(':'));
    match (
        count.and_then(|c| c.parse::<u64>().ok()),
        direction,
        action,
        split,
    ) {
        (Some(count), Some(direction), Some(action), Some((guardrail, rule))) => {
            serde_json::json!({
                "guardrail": guardrail, "rule": rule, "action": action,
                "direction": direction, "count": count,
            })
        }
        _ => serde_json::Value::String(entry.to_owned()),
    }
}
