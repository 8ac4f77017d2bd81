//! Prometheus metrics (`GET /metrics`, text format): counters kept in atomics on the
//! request path, gauges read at scrape time. Nothing here carries a secret or a key id.

use crate::app::App;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// The `/metrics` page of `app`.
pub fn render(app: &App) -> String {
    let counters = &app.counters;
    let mut out = String::with_capacity(1024);
    let status = app.replicator.status();
    out.push_str("# HELP tollgate_responses_total Inference responses by status class.\n");
    out.push_str("# TYPE tollgate_responses_total counter\n");
    for (i, c) in counters.responses.iter().enumerate() {
        let _ = writeln!(
            out,
            "tollgate_responses_total{{class=\"{}xx\"}} {}",
            i + 1,
            c.load(Ordering::Relaxed)
        );
    }
    let gossip = app.gossip.view();
    let live = gossip.members.iter().filter(|m| m.live).count() as u64;
    let gauges: [(&str, &str, &str, u64); 20] = [
            (
                "tollgate_upstream_failures_total",
                "counter",
                "Provider attempts that failed and were retried or fell back.",
                counters.upstream_failures.load(Ordering::Relaxed),
            ),
            (
                "tollgate_charges_total",
                "counter",
                "Charges sent into the charge pipeline.",
                app.gate.charger.sent.load(Ordering::Relaxed),
            ),
            (
                "tollgate_outbox_pending",
                "gauge",
                "Charges in the durable outbox not yet known to be applied.",
                app.outbox.len() as u64,
            ),
            (
                "tollgate_applied_index",
                "gauge",
                "Index of the last command applied to the governance state.",
                status.applied_index,
            ),
            (
                "tollgate_snapshot_index",
                "gauge",
                "Index of the last governance snapshot.",
                status.snapshot_index,
            ),
            (
                "tollgate_storage_bytes",
                "gauge",
                "Bytes of governance storage on disk.",
                status.storage_bytes,
            ),
            (
                "tollgate_committed_index",
                "gauge",
                "Index of the last command known committed.",
                status.committed_index,
            ),
            (
                "tollgate_raft_term",
                "gauge",
                "Current Raft term (0 on a single node).",
                status.term,
            ),
            (
                "tollgate_staleness_milliseconds",
                "gauge",
                "How old this node's governance state may be: on the leader, since a quorum last acknowledged it; elsewhere, since the leader was last heard from.",
                status.staleness_ms,
            ),
            (
                "tollgate_lease_requests_total",
                "counter",
                "Escrow lease requests this node proposed (on a request's shortfall or a top-up).",
                app.gate.admission.lease_requests.load(Ordering::Relaxed),
            ),
            (
                "tollgate_lease_returns_total",
                "counter",
                "Escrow lease give-backs this node proposed (idle, another node short).",
                app.gate.admission.lease_returns.load(Ordering::Relaxed),
            ),
            (
                "tollgate_ready",
                "gauge",
                "1 when the node takes traffic.",
                u64::from(app.ready.load(Ordering::Acquire)),
            ),
            (
                "tollgate_gossip_live_nodes",
                "gauge",
                "Nodes gossip sees live, this one included (0 when running alone).",
                live,
            ),
            (
                "tollgate_gossip_dead_nodes",
                "gauge",
                "Nodes (generations) gossip has marked dead and still remembers.",
                gossip.members.len() as u64 - live,
            ),
            (
                "tollgate_breakers_open",
                "gauge",
                "Provider configs whose circuit breaker is open or half-open here.",
                app.breakers.not_closed().len() as u64,
            ),
            (
                "tollgate_http_connections_open",
                "gauge",
                "Client connections open on the HTTP port.",
                counters.connections_open.load(Ordering::Relaxed),
            ),
            (
                "tollgate_http_connections_timed_out_total",
                "counter",
                "Client connections closed by the header-read timeout (nothing sent, or a head trickled).",
                counters.connections_timed_out.load(Ordering::Relaxed),
            ),
            (
                "tollgate_http_connections_idle_closed_total",
                "counter",
                "Kept-alive client connections closed after [limits] idle_timeout_ms without a request.",
                counters.connections_idle_closed.load(Ordering::Relaxed),
            ),
            (
                "tollgate_http_streams_refused_total",
                "counter",
                "Stream requests refused with 503 at [limits] max_concurrent_streams.",
                counters.streams_refused.load(Ordering::Relaxed),
            ),
            (
                "tollgate_http_streams_open",
                "gauge",
                "Streamed answers being relayed.",
                (app.config.limits.max_concurrent_streams - app.streams.available_permits()) as u64,
            ),
        ];
    for (name, kind, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    if let Some(log) = &app.log {
        let store = &log.store;
        let _ = writeln!(
            out,
            "# HELP tollgate_log_writer_cpu_seconds_total CPU time the request log's writer spent reading the outbox and writing the store.\n# TYPE tollgate_log_writer_cpu_seconds_total counter\ntollgate_log_writer_cpu_seconds_total {:.6}",
            log.writer_cpu_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let log_metrics: [(&str, &str, &str, u64); 6] = [
            (
                "tollgate_log_records_total",
                "counter",
                "Request records written to this node's request log.",
                log.written.load(Ordering::Relaxed),
            ),
            (
                "tollgate_log_writer_lag_bytes",
                "gauge",
                "Outbox bytes the request log has not read yet (roughly).",
                log.lag_bytes.load(Ordering::Relaxed),
            ),
            (
                "tollgate_log_disk_bytes",
                "gauge",
                "Bytes of the request log's store on disk ([logs] max_disk_bytes caps it).",
                store.disk_bytes(),
            ),
            (
                "tollgate_log_dropped_partitions_total",
                "counter",
                "Request log partitions dropped to keep the store under [logs] max_disk_bytes.",
                store.dropped_for_space.load(Ordering::Relaxed),
            ),
            (
                "tollgate_log_dropped_records_total",
                "counter",
                "Request records (roughly) in partitions dropped for the disk cap.",
                store.dropped_records.load(Ordering::Relaxed),
            ),
            (
                "tollgate_log_content_dropped_total",
                "counter",
                "Requests whose bodies were not captured because the capture queue was full.",
                log.content_dropped.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in log_metrics {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
    if let Some(exports) = &app.exports {
        for (name, kind, help, value) in [
            (
                "tollgate_log_export_lag_records",
                "gauge",
                "Records a request log export sink has not taken yet.",
                0usize,
            ),
            (
                "tollgate_log_export_delivered_total",
                "counter",
                "Records delivered to a request log export sink.",
                1,
            ),
            (
                "tollgate_log_export_failures_total",
                "counter",
                "Failed deliveries to a request log export sink (each retried).",
                2,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for sink in &exports.sinks {
                let figure = match value {
                    0 => &sink.lag,
                    1 => &sink.delivered,
                    _ => &sink.failures,
                };
                let _ = writeln!(
                    out,
                    "{name}{{sink=\"{}\"}} {}",
                    sink.name,
                    figure.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tollgate_log_export_dropped_total Records dropped from the export queue before every sink took them.\n# TYPE tollgate_log_export_dropped_total counter\ntollgate_log_export_dropped_total {}",
            exports.dropped.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP tollgate_http_connections_refused_total Client connections closed at accept: the node's cap ([limits] max_connections) or the client address's (max_connections_per_address) was reached.\n");
    out.push_str("# TYPE tollgate_http_connections_refused_total counter\n");
    for (cap, c) in [
        ("node", &counters.connections_refused_node),
        ("address", &counters.connections_refused_address),
    ] {
        let _ = writeln!(
            out,
            "tollgate_http_connections_refused_total{{cap=\"{cap}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP tollgate_guardrail_matches_total Guardrail matches by guardrail, rule, action and direction (never the text).\n");
    out.push_str("# TYPE tollgate_guardrail_matches_total counter\n");
    for ((guardrail, rule, action, direction), n) in app.guards.counts.snapshot() {
        let _ = writeln!(
            out,
            "tollgate_guardrail_matches_total{{guardrail=\"{}\",rule=\"{}\",action=\"{action}\",direction=\"{direction}\"}} {n}",
            label(&guardrail),
            label(&rule)
        );
    }
    let _ = writeln!(
        out,
        "# HELP tollgate_guardrail_cache_entries Content-block verdicts the guardrails remember.\n# TYPE tollgate_guardrail_cache_entries gauge\ntollgate_guardrail_cache_entries {}",
        app.guards.cache.len()
    );
    out
}

/// A label value as Prometheus' text format escapes it.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
