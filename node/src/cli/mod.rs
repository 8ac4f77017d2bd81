//! `tollgate admin ...`: a thin client over the admin API, printing its JSON answers;
//! and `init_process`, the start every binary of the workspace shares.
//!
//! # Layout
//! - `mod.rs`: `tollgate admin`, `init_process`.
//! - `records`: `tollgate logs search|tail`, `tollgate audit verify`.

pub mod records;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;

/// What every binary does first: rustls, reqwest and quinn use ring (without an
/// installed provider, building a client panics), and logs go to stderr, filtered by
/// `TOLLGATE_LOG` (else `default_filter`), one line per event (`logs::OneLine`).
pub fn init_process(default_filter: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // No colours: ESC would otherwise have to pass, and a client's ESC sequences could
    // then rewrite an operator's terminal.
    let ansi = false;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        // One line per event: what clients send cannot start a forged line.
        .with_writer(crate::logs::OneLine::new(std::io::stderr, ansi))
        .with_ansi(ansi)
        .init();
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of any node (or the load balancer).
    #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Admin token; defaults to TOLLGATE_ADMIN_TOKEN, then the token file in --data-dir.
    #[arg(long, env = "TOLLGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data dir holding a generated admin token.
    #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Virtual keys.
    #[command(subcommand)]
    Keys(KeyCommand),
    /// Create a customer.
    CreateCustomer {
        #[arg(long)]
        name: String,
    },
    /// Create a team.
    CreateTeam {
        #[arg(long)]
        name: String,
        #[arg(long)]
        customer: Option<String>,
    },
    /// Create a budget.
    CreateBudget {
        /// virtual_key, team, customer or provider_config.
        #[arg(long)]
        owner_kind: String,
        #[arg(long)]
        owner_id: String,
        /// Limit in US dollars, e.g. 10.00.
        #[arg(long)]
        limit: String,
        /// 1m 5m 1h 1d 1w 1M 1Q 1Y.
        #[arg(long, default_value = "1M")]
        reset: String,
        #[arg(long)]
        calendar_aligned: bool,
    },
    /// Create a rate limit.
    CreateRateLimit {
        #[arg(long)]
        owner_kind: String,
        #[arg(long)]
        owner_id: String,
        #[arg(long)]
        requests: Option<u64>,
        #[arg(long)]
        request_window: Option<String>,
        #[arg(long)]
        tokens: Option<u64>,
        #[arg(long)]
        token_window: Option<String>,
    },
    /// Set the price of a model (use model "*" for the default price).
    SetPrice {
        #[arg(long)]
        model: String,
        /// US dollars per million input tokens.
        #[arg(long)]
        input: String,
        /// US dollars per million output tokens.
        #[arg(long)]
        output: String,
    },
    /// Spend and tokens of a key, team, customer or model (per model without a filter).
    Usage {
        #[arg(long)]
        virtual_key: Option<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        model: Option<String>,
    },
    /// Drain node N (as `cluster drain N`): it stops taking traffic, finishes what is
    /// in flight, hands leadership over if it leads, gives its leases back and exits.
    Drain { node_id: u64 },
    /// Cluster status (`tollgate admin cluster`), or a change of its members.
    Cluster {
        #[command(subcommand)]
        action: Option<ClusterCommand>,
    },
    /// GET any admin path, e.g. `/api/v1/budgets`.
    Get { path: String },
    /// POST a JSON body to any admin path.
    Post { path: String, body: String },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term and every node's replication figures.
    Status {
        /// Read through the leader (`?consistency=linearizable`).
        #[arg(long)]
        linearizable: bool,
    },
    /// Remove a voter from the cluster (stop that node afterwards).
    Remove { node_id: u64 },
    /// Drain a node: it stops taking traffic, finishes what is in flight, hands
    /// leadership over if it leads, gives its leases back and exits (as on SIGTERM).
    Drain { node_id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; prints its secret once.
    Create {
        #[arg(long)]
        name: String,
        /// Provider name from the node config (repeat for several, in order).
        #[arg(long = "provider", default_value = "mock")]
        providers: Vec<String>,
        /// Allowed model: exact name or `regex:...` (repeat); none allows all.
        #[arg(long = "allow")]
        allowed_models: Vec<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        customer: Option<String>,
    },
    /// One page of keys (`next_cursor` in the answer names the next one).
    List {
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        cursor: Option<String>,
    },
    Get {
        id: String,
    },
    Disable {
        id: String,
    },
    Enable {
        id: String,
    },
    Rotate {
        id: String,
    },
    Delete {
        id: String,
    },
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let token = match args.token {
        Some(t) => t,
        None => std::fs::read_to_string(args.data_dir.join(crate::app::ADMIN_TOKEN_FILE))
            .map(|t| t.trim().to_owned())
            .map_err(|_| anyhow::anyhow!("no admin token: pass --token, set TOLLGATE_ADMIN_TOKEN, or point --data-dir at the node's data dir"))?,
    };
    let base = args.url.trim_end_matches('/').to_owned();
    let (method, path, body): (&str, String, Option<Value>) = match args.command {
        AdminCommand::Keys(k) => match k {
            KeyCommand::Create {
                name,
                providers,
                allowed_models,
                team,
                customer,
            } => {
                let configs: Vec<Value> = providers
                    .iter()
                    .map(|p| json!({"provider": p, "allowed_models": allowed_models}))
                    .collect();
                let body = json!({"name": name, "team_id": team, "customer_id": customer, "provider_configs": configs});
                ("POST", "/api/v1/virtual-keys".into(), Some(body))
            }
            KeyCommand::List { limit, cursor } => {
                let mut query = Vec::new();
                if let Some(n) = limit {
                    query.push(format!("limit={n}"));
                }
                if let Some(c) = cursor {
                    query.push(format!("cursor={c}"));
                }
                let path = match query.is_empty() {
                    true => "/api/v1/virtual-keys".to_owned(),
                    false => format!("/api/v1/virtual-keys?{}", query.join("&")),
                };
                ("GET", path, None)
            }
            KeyCommand::Get { id } => ("GET", format!("/api/v1/virtual-keys/{id}"), None),
            KeyCommand::Disable { id } => (
                "PATCH",
                format!("/api/v1/virtual-keys/{id}"),
                Some(json!({"disabled": true})),
            ),
            KeyCommand::Enable { id } => (
                "PATCH",
                format!("/api/v1/virtual-keys/{id}"),
                Some(json!({"disabled": false})),
            ),
            KeyCommand::Rotate { id } => {
                ("POST", format!("/api/v1/virtual-keys/{id}/rotate"), None)
            }
            KeyCommand::Delete { id } => ("DELETE", format!("/api/v1/virtual-keys/{id}"), None),
        },
        AdminCommand::CreateCustomer { name } => (
            "POST",
            "/api/v1/customers".into(),
            Some(json!({"name": name})),
        ),
        AdminCommand::CreateTeam { name, customer } => (
            "POST",
            "/api/v1/teams".into(),
            Some(json!({"name": name, "customer_id": customer})),
        ),
        AdminCommand::CreateBudget {
            owner_kind,
            owner_id,
            limit,
            reset,
            calendar_aligned,
        } => (
            "POST",
            "/api/v1/budgets".into(),
            Some(
                json!({"owner": {"kind": owner_kind, "id": owner_id}, "max_limit_usd": limit,
                        "reset_duration": reset, "calendar_aligned": calendar_aligned}),
            ),
        ),
        AdminCommand::CreateRateLimit {
            owner_kind,
            owner_id,
            requests,
            request_window,
            tokens,
            token_window,
        } => {
            let mut body = json!({"owner": {"kind": owner_kind, "id": owner_id}});
            if let Some(n) = requests {
                body["request_max"] = json!(n);
                body["request_window"] = json!(request_window.unwrap_or_else(|| "1m".into()));
            }
            if let Some(n) = tokens {
                body["token_max"] = json!(n);
                body["token_window"] = json!(token_window.unwrap_or_else(|| "1h".into()));
            }
            ("POST", "/api/v1/rate-limits".into(), Some(body))
        }
        AdminCommand::SetPrice {
            model,
            input,
            output,
        } => (
            "POST",
            "/api/v1/prices".into(),
            Some(
                json!({"model": model, "input_per_mtok_usd": input, "output_per_mtok_usd": output}),
            ),
        ),
        AdminCommand::Usage {
            virtual_key,
            team,
            customer,
            model,
        } => {
            let query = [
                ("virtual_key", virtual_key),
                ("team", team),
                ("customer", customer),
                ("model", model),
            ]
            .into_iter()
            .find_map(|(k, v)| v.map(|v| format!("?{k}={v}")))
            .unwrap_or_default();
            ("GET", format!("/api/v1/usage{query}"), None)
        }
        AdminCommand::Drain { node_id } => (
            "POST",
            format!("/api/v1/cluster/nodes/{node_id}/drain"),
            None,
        ),
        AdminCommand::Cluster { action } => match action {
            None
            | Some(ClusterCommand::Status {
                linearizable: false,
            }) => ("GET", "/api/v1/cluster".into(), None),
            Some(ClusterCommand::Status { linearizable: true }) => (
                "GET",
                "/api/v1/cluster?consistency=linearizable".into(),
                None,
            ),
            Some(ClusterCommand::Remove { node_id }) => {
                ("DELETE", format!("/api/v1/cluster/nodes/{node_id}"), None)
            }
            Some(ClusterCommand::Drain { node_id }) => (
                "POST",
                format!("/api/v1/cluster/nodes/{node_id}/drain"),
                None,
            ),
        },
        AdminCommand::Get { path } => ("GET", path, None),
        AdminCommand::Post { path, body } => ("POST", path, Some(serde_json::from_str(&body)?)),
    };
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("{base}{path}");
    let mut request = match method {
        "POST" => client.post(&url),
        "PATCH" => client.patch(&url),
        "DELETE" => client.delete(&url),
        _ => client.get(&url),
    }
    .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {base}: {e}"))?;
    let status = response.status();
    let text = response.text().await?;
    let shown = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    if !shown.is_empty() {
        println!("{shown}");
    }
    if !status.is_success() {
        anyhow::bail!("{method} {path} answered {status}");
    }
    Ok(())
}
