//! The peer protocol versions this node speaks, and how the cluster moves to a newer one.
//!
//! A build speaks `ProtocolRange::BUILD`; `serve --protocol-version N` caps it at `N`, so
//! one binary can play the old build of a rolling upgrade in tests. What the range
//! governs:
//! - peer envelopes: a node answers only versions it speaks, and writes to each peer in
//!   the newest version both speak (`transport::quic` learns a peer's maximum from its
//!   `UnsupportedVersion` answer);
//! - log entries: an entry kind of a version the node does not speak is refused where it
//!   arrives (`cluster::rpc`), as an old build would fail to decode it; so the cluster
//!   proposes it only once every member speaks its version: the leader raises the
//!   replicated `GovState::protocol_version` (`raise_when_supported`) once every member
//!   reports it, and proposers check that version first.
//! - a node behind the cluster: a node whose range ends below the cluster's version
//!   (one restarted with an older build after the cluster moved on, or an old build
//!   joining) will not start if its stored state shows it, and otherwise drains and
//!   exits 1 as soon as it meets the newer version (`stop_when_outdated`: in the state
//!   it applied, from its own log or a snapshot, or in entries it refused).

use super::version::Versions;
use crate::governance::replicator::{ReplicateError, Replicator, SharedState};
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::Command;

/// How often the leader checks whether every member speaks a newer version.
const RAISE_CHECK: Duration = Duration::from_secs(1);

/// How often a node checks whether the cluster moved beyond what it speaks.
const OUTDATED_CHECK: Duration = Duration::from_millis(500);

/// Runs on every node: once the cluster uses a version this node does not speak, it
/// cannot follow the log, so it drains (requests in flight finish, charges are applied)
/// and the server exits 1 (`server::serve` asks `outdated`).
pub async fn stop_when_outdated(
    state: SharedState,
    drain: Arc<crate::cluster::drain::Drain>,
    versions: Arc<Versions>,
) {
    loop {
        versions.note_cluster_version(state.read().protocol_version());
        if let Some(version) = versions.outdated() {
            tracing::error!(
                cluster = version,
                speaks = %versions.local(),
                "the cluster uses a protocol version this node does not speak; draining (run a build that speaks it)"
            );
            drain.start();
            return;
        }
        tokio::time::sleep(OUTDATED_CHECK).await;
    }
}

/// Runs on every node; acts while it leads: raises the cluster's protocol version once
/// every member (voters and learners, which also read the log) speaks a newer one.
pub async fn raise_when_supported(replicator: Arc<dyn Replicator>, versions: Arc<Versions>) {
    loop {
        tokio::time::sleep(RAISE_CHECK).await;
        let view = replicator.cluster_view();
        if view.leader != Some(view.node_id) {
            continue;
        }
        let current = replicator.state().read().protocol_version();
        if current >= versions.local().max {
            continue;
        }
        let reports = replicator.member_reports().await;
        let ranges = reports
            .iter()
            .map(|r| r.status.as_ref().ok().map(|s| s.protocol));
        let Some(version) = versions.supported_by_all(current, ranges) else {
            continue;
        };
        match replicator
            .propose(Command::SetProtocolVersion { version })
            .await
        {
            Ok(_) => tracing::info!(
                from = current,
                to = version,
                "cluster protocol version raised"
            ),
            Err(ReplicateError::Cluster(e)) => {
                tracing::debug!(error = %e, "protocol version not raised yet")
            }
            Err(e) => tracing::warn!(error = %e, "protocol version not raised"),
        }
    }
}
