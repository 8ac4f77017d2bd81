//! Unit tests of `limits`.

use super::*;
use crate::cluster::gossip::{PeerClaim, View};
use tollgate_proto::{KeyId, Owner};

fn limit(max: u64) -> RateLimit {
    RateLimit {
        id: RateLimitId::from("rl_t"),
        owner: Owner::VirtualKey(KeyId::from("vk_t")),
        request_max: Some(max),
        request_window: Some(ResetDuration::Minute),
        token_max: None,
        token_window: None,
        created_at_ms: 0,
    }
}

/// A limiter whose gossip hears nobody, in a cluster of `voters`.
fn alone_with_voters(voters: usize) -> Arc<RateLimiter> {
    RateLimiter::new(
        Gossip::alone(1),
        Arc::new(crate::clock::SystemClock::default()),
        Box::new(move || voters),
    )
}

fn admitted(limiter: &RateLimiter, limits: &[RateLimit], n: usize, now_ms: u64) -> usize {
    (0..n)
        .filter(|_| limiter.admit(limits, now_ms).is_ok())
        .count()
}

#[tokio::test]
async fn alone_the_whole_limit_and_a_new_window_starts_over() {
    let limiter = alone_with_voters(1);
    let limits = [limit(10)];
    assert_eq!(admitted(&limiter, &limits, 15, 60_000), 10);
    match limiter.admit(&limits, 60_001) {
        Err(RateLimited {
            retry_after_s,
            message,
        }) => {
            assert_eq!(retry_after_s, 60, "{message}");
            assert!(message.contains("10 requests per 1m exceeded"), "{message}");
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    assert_eq!(admitted(&limiter, &limits, 15, 120_000), 10);
}

#[tokio::test]
async fn a_late_clock_reading_never_moves_a_window_back_and_a_lower_limit_holds() {
    let limiter = alone_with_voters(1);
    assert_eq!(admitted(&limiter, &[limit(10)], 6, 120_000), 6);
    // A request that read the clock before the boundary counts in the new window.
    assert_eq!(admitted(&limiter, &[limit(10)], 15, 119_999), 4);
    assert_eq!(admitted(&limiter, &[limit(10)], 1, 120_001), 0);
    // The limit is lowered mid-window: the claim made under the old one does not
    // outlive it.
    assert_eq!(admitted(&limiter, &[limit(20)], 5, 180_000), 5);
    assert_eq!(admitted(&limiter, &[limit(8)], 10, 180_001), 3);
}

#[tokio::test]
async fn a_node_that_hears_nobody_still_leaves_the_voters_their_shares() {
    // Gossip has not (yet, or wrongly) heard the two other voters.
    let limiter = alone_with_voters(3);
    assert_eq!(admitted(&limiter, &[limit(600)], 300, 60_000), 200);
}

#[tokio::test]
async fn with_peers_a_node_claims_its_share_then_what_they_leave() {
    let gossip = Gossip::alone(1);
    let limiter = RateLimiter::new(
        Arc::clone(&gossip),
        Arc::new(crate::clock::SystemClock::default()),
        Box::new(|| 3),
    );
    let limits = [limit(600)];
    let peers_in = |window_start_ms: u64, held: u64| {
        let mut view = View::default();
        for node in [2u64, 3, 1] {
            view.members.push(crate::cluster::gossip::Member {
                node_id: node,
                generation: 1,
                gossip_addr: ([127, 0, 0, 1], 1).into(),
                live: true,
                state: None,
                version: None,
                http_addr: None,
            });
        }
        view.rates.insert(
            ("rl_t".into(), Dimension::Requests),
            [2u64, 3]
                .iter()
                .map(|&node_id| PeerClaim {
                    node_id,
                    generation: 1,
                    live: true,
                    claim: RateClaim {
                        window_start_ms,
                        count: held,
                        claim: held,
                    },
                })
                .collect(),
        );
        view
    };
    let peers = |held: u64| peers_in(60_000, held);
    gossip.set_view(peers(0));
    assert_eq!(admitted(&limiter, &limits, 300, 60_000), 200, "a third");
    // Within the round: no new claim, and the refusal says to come back soon.
    match limiter.admit(&limits, 60_100) {
        Err(RateLimited { retry_after_s, .. }) => assert_eq!(retry_after_s, 1),
        other => panic!("expected a 429, got {other:?}"),
    }
    // The peers used 150 each: a third of the 100 left.
    gossip.set_view(peers(150));
    assert_eq!(
        admitted(&limiter, &limits, 300, 60_000 + CLAIM_ROUND_MS),
        34
    );
    // The peers hold the rest: exhausted until the window ends.
    gossip.set_view(peers(183));
    match limiter.admit(&limits, 60_000 + 2 * CLAIM_ROUND_MS) {
        Err(RateLimited { retry_after_s, .. }) => {
            assert_eq!(retry_after_s, (60_000 - 2 * CLAIM_ROUND_MS).div_ceil(1000))
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    // The peers' clocks run ahead: they gossip claims for the next window now. What
    // they held of this one still counts here.
    gossip.set_view(peers_in(120_000, 0));
    assert_eq!(
        admitted(&limiter, &limits, 10, 60_000 + 4 * CLAIM_ROUND_MS),
        0
    );
}
