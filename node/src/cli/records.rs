//! `tollgate logs search|tail` and `tollgate audit verify`: the request log and the
//! audit trail from a terminal, through any node's admin API.

use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Args)]
pub struct Conn {
    /// Base URL of any node (or the load balancer).
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// Admin token; defaults to TOLLGATE_ADMIN_TOKEN, then the token file in --data-dir.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Data dir holding a generated admin token.
    #[arg(long, global = true, default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// Filters of `logs search` and `logs tail`.
#[derive(Debug, Args)]
pub struct Filters {
    #[arg(long)]
    pub virtual_key: Option<String>,
    #[arg(long)]
    pub team: Option<String>,
    #[arg(long)]
    pub customer: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub status: Option<u16>,
    /// RFC 3339, e.g. 2026-12-07T00:00:00Z.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    /// Text in captured request or response bodies.
    #[arg(long)]
    pub q: Option<String>,
    /// One JSON record per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Records matching the filters, newest first.
    Search {
        #[command(flatten)]
        filters: Filters,
        /// Records to show at most.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// New records as they come (oldest first), until interrupted.
    Tail {
        #[command(flatten)]
        filters: Filters,
        /// How often to ask.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: LogsCommand,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit trail and every node's request-log hash chain against the
    /// anchors replicated through Raft; exit 1 naming the first bad sequence.
    Verify,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: AuditCommand,
}

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(conn: Conn) -> anyhow::Result<Api> {
        let token = match conn.token {
            Some(t) => t,
            None => std::fs::read_to_string(conn.data_dir.join(crate::app::ADMIN_TOKEN_FILE))
                .map(|t| t.trim().to_owned())
                .map_err(|_| anyhow::anyhow!("no admin token: pass --token, set TOLLGATE_ADMIN_TOKEN, or point --data-dir at the node's data dir"))?,
        };
        Ok(Api {
            client: reqwest::Client::builder().no_proxy().build()?,
            base: conn.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn get(&self, path: &str, query: &[(String, String)]) -> anyhow::Result<Value> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)
            .map_err(|e| anyhow::anyhow!("bad URL {}: {e}", self.base))?;
        let response = self
            .client
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("");
            anyhow::bail!("GET {path} answered {status}: {message}");
        }
        Ok(body)
    }
}

fn query_of(f: &Filters) -> Vec<(String, String)> {
    let status = f.status.map(|s| s.to_string());
    [
        ("virtual_key", &f.virtual_key),
        ("team", &f.team),
        ("customer", &f.customer),
        ("model", &f.model),
        ("provider", &f.provider),
        ("session", &f.session),
        ("status", &status),
        ("since", &f.since),
        ("until", &f.until),
        ("q", &f.q),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), v.clone())))
    .collect()
}

fn show(record: &Value, json: bool) {
    if json {
        println!("{record}");
        return;
    }
    let text = |k: &str| record[k].as_str().unwrap_or("-").to_owned();
    println!(
        "{}  {}  {:>3}  {:<24} {:<16} {:>7} in {:>6} out  ${:<10} {:>6} ms  {}",
        text("time"),
        record["node"],
        record["status"],
        text("model"),
        text("virtual_key_name"),
        record["input_tokens"],
        record["output_tokens"],
        text("cost_usd"),
        record["latency_ms"],
        text("request_id"),
    );
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let api = Api::new(args.conn)?;
    match args.command {
        LogsCommand::Search { filters, limit } => {
            let mut query = query_of(&filters);
            let mut left = limit.max(1);
            loop {
                let mut page = query.clone();
                page.push(("limit".into(), left.min(1000).to_string()));
                let answer = api.get("/api/v1/logs", &page).await?;
                let records = answer["records"].as_array().cloned().unwrap_or_default();
                for r in &records {
                    show(r, filters.json);
                }
                if answer["partial"] == true {
                    eprintln!(
                        "partial answer: nodes {} did not answer",
                        answer["missing_nodes"]
                    );
                }
                left = left.saturating_sub(records.len() as u32);
                match answer["next_cursor"].as_str() {
                    Some(c) if left > 0 => {
                        query.retain(|(k, _)| k != "cursor");
                        query.push(("cursor".into(), c.to_owned()));
                    }
                    _ => return Ok(()),
                }
            }
        }
        LogsCommand::Tail {
            filters,
            interval_ms,
        } => {
            let query = query_of(&filters);
            let mut seen = std::collections::VecDeque::new();
            let mut known = std::collections::HashSet::new();
            loop {
                let mut page = query.clone();
                page.push(("limit".into(), "200".into()));
                let answer = api.get("/api/v1/logs", &page).await?;
                let records = answer["records"].as_array().cloned().unwrap_or_default();
                for r in records.iter().rev() {
                    let id = r["request_id"].as_str().unwrap_or("").to_owned();
                    if known.insert(id.clone()) {
                        show(r, filters.json);
                        seen.push_back(id);
                        // Remember what a page can show again, no more.
                        if seen.len() > 4096 {
                            if let Some(old) = seen.pop_front() {
                                known.remove(&old);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(interval_ms.max(100))).await;
            }
        }
    }
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let api = Api::new(args.conn)?;
    match args.command {
        AuditCommand::Verify => {
            let answer = api.get("/api/v1/audit/verify", &[]).await?;
            let a = &answer["audit"];
            let verdict = |ok: &Value| if *ok == true { "ok" } else { "BAD" };
            println!(
                "audit trail: {} ({} events, sequences {}..{})",
                verdict(&a["ok"]),
                a["events"],
                a["first_seq"],
                a["last_seq"]
            );
            if a["ok"] != true {
                println!(
                    "  first bad sequence {}: {}",
                    a["bad_seq"],
                    a["reason"].as_str().unwrap_or("")
                );
            }
            for n in answer["nodes"].as_array().cloned().unwrap_or_default() {
                let anchored = match n["anchored_seq"].as_u64() {
                    Some(s) => format!("anchored at {s}"),
                    None => "not anchored yet".into(),
                };
                println!(
                    "node {} request log: {} ({} records, sequences {}..{}, {anchored})",
                    n["node"],
                    verdict(&n["ok"]),
                    n["records"],
                    n["first_seq"],
                    n["last_seq"]
                );
                if n["ok"] != true {
                    println!(
                        "  node {}, chain request_log, first bad sequence {}: {}",
                        n["node"],
                        n["bad_seq"],
                        n["reason"].as_str().unwrap_or("")
                    );
                }
            }
            for node in answer["missing_nodes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                println!("node {node} request log: NOT CHECKED (the node did not answer)");
            }
            if answer["ok"] != true {
                anyhow::bail!("verification failed");
            }
            Ok(())
        }
    }
}
