//! `[logs]`: what the request log captures, how long it keeps it, how much disk it may
//! use, and where records are also sent (`[[logs.exports]]`).

use super::secret::resolve_reference;
use serde::Deserialize;
use std::path::PathBuf;

/// What the request log captures of each request (`[logs] content`): `off` keeps no
/// request log at all (charges and intents still go through the outbox), so a key's own
/// `log_content` applies only under `metadata` or `full`.
pub use tollgate_proto::LogContent as ContentMode;

/// The request log (`[logs]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    pub content: ContentMode,
    /// How long records are kept: `90d`, `12h`, `30m`.
    pub retention: String,
    /// How long captured bodies are kept.
    pub content_retention: String,
    /// The store never grows past this; the oldest partitions go first.
    pub max_disk_bytes: u64,
    /// Where records are also sent (`[[logs.exports]]`).
    pub exports: Vec<ExportConfig>,
}

/// Where an export sends records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// POSTed in batches to `url`.
    Webhook,
    /// Appended as JSON lines to `path`, rotated at `max_file_bytes`.
    File,
}

/// How a webhook's batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    /// One JSON record per line.
    #[default]
    Jsonl,
    /// Splunk's HTTP Event Collector: one `{"time", "sourcetype", "event"}` per record.
    SplunkHec,
    /// Elasticsearch's `_bulk`: an `index` action line before each record.
    ElasticBulk,
}

/// One `[[logs.exports]]` sink: every record is delivered at least once, in order, from
/// a position kept in the store; a slow or dead sink holds up no request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    pub kind: ExportKind,
    /// Names the sink in metrics and the store (default `KIND-N`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub format: ExportFormat,
    /// `env:NAME` or `file:PATH`: sent as `Authorization: Splunk <token>` to Splunk,
    /// `Bearer <token>` otherwise.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A file is rotated (`.1`, `.2`, ...) once it holds this much.
    #[serde(default = "default_export_file_bytes")]
    pub max_file_bytes: u64,
    /// Rotated files kept.
    #[serde(default = "default_export_keep")]
    pub keep_files: u32,
    /// Records in one delivery at most.
    #[serde(default = "default_export_batch")]
    pub batch_max: usize,
}

fn default_export_file_bytes() -> u64 {
    100 << 20
}

fn default_export_keep() -> u32 {
    5
}

fn default_export_batch() -> usize {
    500
}

impl ExportConfig {
    /// The sink's name: given, or `KIND-N` for the `n`th export.
    pub fn name_at(&self, n: usize) -> String {
        self.name.clone().unwrap_or_else(|| {
            let kind = match self.kind {
                ExportKind::Webhook => "webhook",
                ExportKind::File => "file",
            };
            format!("{kind}-{n}")
        })
    }
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            content: ContentMode::Metadata,
            retention: "90d".into(),
            content_retention: "7d".into(),
            max_disk_bytes: 10 << 30,
            exports: Vec::new(),
        }
    }
}

/// The smallest disk cap: the store's journal (128 MiB of it, see
/// `records::store::JOURNAL_BUDGET_BYTES`) and partitions must fit.
pub const LOGS_MIN_DISK_BYTES: u64 = 256 << 20;

/// A retention such as `90d`, `12h`, `30m` or `45s`, in milliseconds.
pub fn parse_retention(text: &str) -> Option<u64> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(unit_at);
    let n: u64 = digits.parse().ok()?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).filter(|ms| *ms > 0)
}

impl LogsConfig {
    pub fn retention_ms(&self) -> u64 {
        parse_retention(&self.retention).unwrap_or(90 * 86_400_000)
    }

    pub fn content_retention_ms(&self) -> u64 {
        parse_retention(&self.content_retention).unwrap_or(7 * 86_400_000)
    }
}

/// Checks `[logs]`, naming the field at fault.
pub(super) fn validate(logs: &LogsConfig) -> Result<(), (&'static str, String)> {
    let fail = |field: &'static str, message: &str| Err((field, message.to_owned()));
    for (name, value) in [
        ("logs.retention", &logs.retention),
        ("logs.content_retention", &logs.content_retention),
    ] {
        if parse_retention(value).is_none() {
            return fail(
                name,
                "must be a positive number and a unit s, m, h or d, such as \"90d\"",
            );
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (n, export) in logs.exports.iter().enumerate() {
        let name = export.name_at(n);
        if !names.insert(name.clone())
            || name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return fail(
                "logs.exports.name",
                "must be unique, letters, digits, - and _",
            );
        }
        match export.kind {
            ExportKind::Webhook => {
                let url = export.url.as_deref().unwrap_or("");
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return fail("logs.exports.url", "a webhook needs an http(s) url");
                }
            }
            ExportKind::File => {
                if export.path.is_none() {
                    return fail("logs.exports.path", "a file export needs a path");
                }
            }
        }
        if export.batch_max == 0 || export.batch_max > 10_000 {
            return fail("logs.exports.batch_max", "must be 1 to 10000");
        }
        if export.max_file_bytes < 4096 {
            return fail("logs.exports.max_file_bytes", "must be at least 4096");
        }
        if let Some(token) = &export.token {
            resolve_reference(token, "token").map_err(|message| ("logs.exports.token", message))?;
        }
    }
    if logs.max_disk_bytes < LOGS_MIN_DISK_BYTES {
        return fail(
            "logs.max_disk_bytes",
            "must be at least 268435456 (256 MiB)",
        );
    }
    Ok(())
}
