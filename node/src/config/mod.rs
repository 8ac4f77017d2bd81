//! Node configuration: defaults, overridden by the TOML file, overridden by flags.
//! Provider credentials are references (`env:NAME`, `file:PATH`), resolved at start and
//! never logged or returned by any API.
//!
//! # Layout
//! - `mod.rs`: the file, the server, limits, breakers, gossip.
//! - `error`: why a config does not load.
//! - `logs`: `[logs]`, the request log and its exports.
//! - `providers`: `[[providers]]`, each kind's fields and their checks.
//! - `secret`: credentials from `env:NAME` or `file:PATH`, never shown.

mod error;
pub mod logs;
pub mod providers;
pub mod secret;

pub use error::ConfigError;
pub use logs::{
    parse_retention, ContentMode, ExportConfig, ExportFormat, ExportKind, LogsConfig,
    LOGS_MIN_DISK_BYTES,
};
pub use providers::{ProviderKind, ProviderSpec, BUILTIN_MOCK};
pub use secret::{resolve_reference, Secret};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default listen address of the HTTP API.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./tollgate-data";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub providers: Vec<ProviderSpec>,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub gossip: GossipConfig,
    #[serde(default)]
    pub logs: LogsConfig,
}

/// When a provider config's circuit breaker opens, and for how long (`[breaker]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed attempts (connect errors, timeouts, 5xx, refused credentials)
    /// that open the breaker.
    pub consecutive_failures: u32,
    /// Or: at least this share of attempts failed (percent) ...
    pub error_rate_percent: u32,
    /// ... among at least this many attempts ...
    pub min_requests: u32,
    /// ... in a window of this length.
    pub window_ms: u64,
    /// How long an open breaker stays open before one probe request may try again.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            error_rate_percent: 50,
            min_requests: 20,
            window_ms: 10_000,
            open_ms: 5_000,
        }
    }
}

/// Gossip timing (`[gossip]`); only used in a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipConfig {
    /// A gossip round: each node exchanges state with up to three others this often.
    pub interval_ms: u64,
    /// phi-accrual threshold: a node is dead once its silence exceeds this many times
    /// its usual heartbeat interval (about `interval_ms`).
    pub phi_threshold: f64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            interval_ms: 100,
            phi_threshold: 12.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_http_addr")]
    pub http_addr: SocketAddr,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Load balancers whose `X-Forwarded-For` names the client (addresses or CIDR
    /// blocks); none by default: the client is the connection's peer.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_addr: default_http_addr(),
            data_dir: default_data_dir(),
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_http_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

/// Explicit limits of the request path; each has a default chosen below.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted. Claude Code sends 50–80 KB; images push a request to
    /// a few MB; 10 MiB leaves room without letting one client pin memory.
    pub max_body_bytes: usize,
    /// Requests served at once by this node; beyond it callers get 503 rather than a
    /// node that runs out of memory or sockets.
    pub max_concurrent_requests: usize,
    /// Streamed answers relayed at once by this node; beyond it a stream request gets
    /// 503 before it reaches a provider.
    pub max_concurrent_streams: usize,
    /// Open client connections on the HTTP port; past it a new connection is closed at
    /// once (counted in `/metrics`) and the open ones keep being served. Lowered at
    /// start to what the process's file limit allows (raised to its hard limit first).
    pub max_connections: usize,
    /// Open connections from one client address. Behind a load balancer every
    /// connection comes from its address: set this above its pool size, or 0 (none).
    pub max_connections_per_address: usize,
    /// Time a client gets to send a whole request, head and body, counted from the
    /// connect or from the head's first byte: it closes connections that send nothing or
    /// trickle a head or a body (slowloris, slow POST).
    pub header_read_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout_ms: u64,
    /// Time to open a TCP/TLS connection to a provider before trying the next one.
    pub upstream_connect_timeout_ms: u64,
    /// Time until a provider's response headers arrive. Large prompts on slow models can
    /// take minutes to the first token, so this is generous.
    pub upstream_response_timeout_ms: u64,
    /// Longest silence between two chunks of a streamed answer before it is cut.
    pub stream_idle_timeout_ms: u64,
    /// Attempts per request across retries and fallbacks.
    pub max_attempts: usize,
    /// Most charges proposed in one batch.
    pub charge_batch_max: usize,
    /// Output tokens assumed for a reservation when the request sets no `max_tokens`.
    pub default_max_tokens: u64,
    /// The least output a stream relayed in its own dialect reserves at first (more when
    /// the key's recent answers from that model were longer: their 95th percentile; at
    /// most its `max_tokens`): its relay meters the output and extends the reservation
    /// as it comes, so a request reserves near what it will use, not its worst case.
    /// 0: streams reserve their worst case, as other requests do.
    pub stream_reserve_tokens: u64,
    /// At SIGTERM or `admin drain`, how long the node still takes new requests after
    /// `/health/ready` turned 503: a load balancer needs a few health checks to notice
    /// (HAProxy in `scripts/cluster.sh`: two failed checks at most 500 ms apart).
    pub drain_grace_ms: u64,
    /// Then, how long requests and streams in flight get to finish before they are cut:
    /// a long Claude Code answer streams for minutes.
    pub drain_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 10 * 1024 * 1024,
            max_concurrent_requests: 4096,
            max_concurrent_streams: 4096,
            max_connections: 8192,
            max_connections_per_address: 1024,
            header_read_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            upstream_connect_timeout_ms: 5_000,
            upstream_response_timeout_ms: 600_000,
            stream_idle_timeout_ms: 300_000,
            max_attempts: 3,
            charge_batch_max: 1024,
            default_max_tokens: 4096,
            stream_reserve_tokens: 1024,
            drain_grace_ms: 2_000,
            drain_timeout_ms: 300_000,
        }
    }
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => Config {
                server: ServerConfig::default(),
                limits: Limits::default(),
                providers: Vec::new(),
                breaker: BreakerConfig::default(),
                gossip: GossipConfig::default(),
                logs: LogsConfig::default(),
            },
        };
        if !config.providers.iter().any(|p| p.name == BUILTIN_MOCK) {
            config.providers.push(ProviderSpec {
                name: BUILTIN_MOCK.to_owned(),
                kind: ProviderKind::Mock,
                ..ProviderSpec::default()
            });
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let field = |field: &'static str, message: &str| {
            Err(ConfigError::Field {
                field,
                message: message.to_owned(),
            })
        };
        logs::validate(&self.logs)
            .map_err(|(field, message)| ConfigError::Field { field, message })?;
        crate::http::forwarded::TrustedProxies::parse(&self.server.trusted_proxies).map_err(
            |message| ConfigError::Field {
                field: "server.trusted_proxies",
                message,
            },
        )?;
        let b = &self.breaker;
        if b.consecutive_failures == 0 {
            return field("breaker.consecutive_failures", "must be at least 1");
        }
        if !(1..=100).contains(&b.error_rate_percent) {
            return field("breaker.error_rate_percent", "must be 1 to 100");
        }
        if b.min_requests == 0 {
            return field("breaker.min_requests", "must be at least 1");
        }
        if !(100..=3_600_000).contains(&b.window_ms) {
            return field("breaker.window_ms", "must be 100 ms to 1 hour");
        }
        if !(100..=3_600_000).contains(&b.open_ms) {
            return field("breaker.open_ms", "must be 100 ms to 1 hour");
        }
        if !(10..=10_000).contains(&self.gossip.interval_ms) {
            return field("gossip.interval_ms", "must be 10 ms to 10 s");
        }
        if !(self.gossip.phi_threshold >= 2.0 && self.gossip.phi_threshold <= 1000.0) {
            return field("gossip.phi_threshold", "must be 2 to 1000");
        }
        let l = &self.limits;
        for (name, value) in [
            ("limits.max_body_bytes", l.max_body_bytes as u64),
            (
                "limits.max_concurrent_requests",
                l.max_concurrent_requests as u64,
            ),
            (
                "limits.max_concurrent_streams",
                l.max_concurrent_streams as u64,
            ),
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.upstream_connect_timeout_ms",
                l.upstream_connect_timeout_ms,
            ),
            (
                "limits.upstream_response_timeout_ms",
                l.upstream_response_timeout_ms,
            ),
            ("limits.stream_idle_timeout_ms", l.stream_idle_timeout_ms),
            ("limits.max_attempts", l.max_attempts as u64),
            ("limits.charge_batch_max", l.charge_batch_max as u64),
            ("limits.default_max_tokens", l.default_max_tokens),
            ("limits.header_read_timeout_ms", l.header_read_timeout_ms),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
        ] {
            if value == 0 {
                return field(
                    name,
                    "must be at least 1 (0 would refuse or cut everything)",
                );
            }
        }
        providers::validate(&self.providers)?;
        Ok(())
    }
}
