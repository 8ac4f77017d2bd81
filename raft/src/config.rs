//! Raft settings that storage depends on: how often a snapshot is taken and how much log
//! is kept behind it, so the log stays bounded under steady charging.

/// Build a snapshot once this many entries were committed since the last one. A charge
/// batch is one entry, so at a few hundred batches a second this is a snapshot every
/// minute or so, and a restart replays at most this many entries after the snapshot.
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 10_000;

/// Entries already in a snapshot that are kept anyway, so a follower that lags a little
/// catches up from the log instead of receiving a whole snapshot.
pub const LOGS_KEPT_BEHIND_SNAPSHOT: u64 = 1_000;

/// The page cache of a node's sled database (sled's default is 1 GiB, which a node
/// charging steadily fills: the log is written and purged all the time). The log's
/// recent tail and the snapshot are what is read; this holds both many times over.
pub const SLED_CACHE_BYTES: u64 = 16 << 20;

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

/// Raft timing for nodes on a real network (`with_node_timing`); the simulator keeps
/// openraft's defaults (heartbeat 50 ms, elections 150–300 ms), which elect more often
/// and so test the protocol harder.
///
/// openraft 0.9 gives each AppendEntries the heartbeat interval as its deadline, and that
/// includes the follower's fsync of the entries. Under load on a small machine (two
/// cores shared by the nodes, HAProxy, clients and Claude Code) 50 ms was missed for
/// seconds on end: the leader counted its followers unreachable, they elected, and
/// requests needing the leader failed for seconds. 150 ms rides through such spells.
pub const NODE_HEARTBEAT_MS: u64 = 150;
/// Elections: a follower waits the leader lease (`election_timeout_max`) plus a random
/// timeout in this range after the last heartbeat, so a crashed leader is replaced
/// within about 1.2–2.4 s; a draining leader hands over at once (`cluster::handover`).
pub const NODE_ELECTION_TIMEOUT_MS: (u64, u64) = (600, 1_200);

/// `config` with `NODE_HEARTBEAT_MS` and `NODE_ELECTION_TIMEOUT_MS`.
pub fn with_node_timing(
    config: openraft::Config,
) -> Result<openraft::Config, Box<openraft::ConfigError>> {
    openraft::Config {
        heartbeat_interval: NODE_HEARTBEAT_MS,
        election_timeout_min: NODE_ELECTION_TIMEOUT_MS.0,
        election_timeout_max: NODE_ELECTION_TIMEOUT_MS.1,
        ..config
    }
    .validate()
    .map_err(Box::new)
}
