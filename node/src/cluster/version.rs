//! The peer protocol versions one node speaks, and the newest it met in the cluster. One
//! value per node, made at start and handed to what needs it (transport, peer router,
//! gossip, replicators, server), so nodes sharing a process (the simulator, tests) can
//! speak different ranges.

use std::sync::atomic::{AtomicU16, Ordering};
use tollgate_proto::peer::ProtocolRange;

#[derive(Debug)]
pub struct Versions {
    local: ProtocolRange,
    /// The newest cluster protocol version this node met in its log or state.
    met: AtomicU16,
}

impl Default for Versions {
    fn default() -> Self {
        Versions::new(ProtocolRange::BUILD)
    }
}

impl Versions {
    /// A node speaking `local` (`ProtocolRange::BUILD`, or capped by
    /// `serve --protocol-version`).
    pub fn new(local: ProtocolRange) -> Versions {
        Versions {
            local,
            met: AtomicU16::new(0),
        }
    }

    /// The versions this node speaks.
    pub fn local(&self) -> ProtocolRange {
        self.local
    }

    /// Notes that the cluster uses protocol `version` (from an entry or the state).
    pub fn note_cluster_version(&self, version: u16) {
        self.met.fetch_max(version, Ordering::SeqCst);
    }

    /// The cluster's protocol version if this node met one newer than it speaks.
    pub fn outdated(&self) -> Option<u16> {
        let met = self.met.load(Ordering::SeqCst);
        (met > self.local.max).then_some(met)
    }

    /// The version the cluster can move to: the newest every member speaks, if above
    /// `current`. `None` when a member's range is unknown (it did not answer): a member
    /// that is down may be an old build.
    pub fn supported_by_all(
        &self,
        current: u16,
        ranges: impl IntoIterator<Item = Option<ProtocolRange>>,
    ) -> Option<u16> {
        let mut newest = self.local.max;
        for range in ranges {
            newest = newest.min(range?.max);
        }
        (newest > current).then_some(newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: u16, max: u16) -> Option<ProtocolRange> {
        Some(ProtocolRange { min, max })
    }

    #[test]
    fn the_cluster_moves_only_to_what_every_member_speaks() {
        let versions = Versions::default();
        let top = versions.local().max;
        let check = |current, ranges: &[Option<ProtocolRange>]| {
            versions.supported_by_all(current, ranges.iter().copied())
        };
        assert_eq!(
            check(1, &[range(1, top), range(1, top)]),
            (top > 1).then_some(top)
        );
        // One old member holds the cluster back.
        assert_eq!(check(1, &[range(1, top), range(1, 1)]), None);
        // A member that did not answer may be old.
        assert_eq!(check(1, &[range(1, top), None]), None);
        // Never down.
        assert_eq!(check(top, &[range(1, top)]), None);
    }

    #[test]
    fn a_node_is_outdated_once_it_meets_a_version_above_its_range() {
        let versions = Versions::new(ProtocolRange { min: 1, max: 1 });
        versions.note_cluster_version(1);
        assert_eq!(versions.outdated(), None);
        versions.note_cluster_version(2);
        versions.note_cluster_version(1);
        assert_eq!(versions.outdated(), Some(2));
    }
}
