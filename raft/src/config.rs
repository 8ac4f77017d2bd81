//! Raft settings that storage depends on: how often a snapshot is taken and how much log
//! is kept behind it, so the log stays bounded under steady charging.

/// Build a snapshot once this many entries were committed since the last one. A charge
/// batch is one entry, so at a few hundred batches a second this is a snapshot every
/// minute or so, and a restart replays at most this many entries after the snapshot.
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 10_000;

/// Entries already in a snapshot that are kept anyway, so a follower that lags a little
/// catches up from the log instead of receiving a whole snapshot.
pub const LOGS_KEPT_BEHIND_SNAPSHOT: u64 = 1_000;

/// openraft's config with Tollgate's snapshot and purge policy; timing is left at
/// openraft's defaults for the node to tune. The log holds at most about
/// `SNAPSHOT_LOGS_SINCE_LAST + LOGS_KEPT_BEHIND_SNAPSHOT` entries plus what is not yet
/// applied.
/// (`ConfigError` is large, hence the box.)
pub fn raft_config(cluster_name: &str) -> Result<openraft::Config, Box<openraft::ConfigError>> {
    openraft::Config {
        cluster_name: cluster_name.to_owned(),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_LOGS_SINCE_LAST),
        max_in_snapshot_log_to_keep: LOGS_KEPT_BEHIND_SNAPSHOT,
        ..openraft::Config::default()
    }
    .validate()
    .map_err(Box::new)
}
