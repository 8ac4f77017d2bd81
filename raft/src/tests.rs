//! Unit tests of the governance state machine: hierarchy, idempotency, rollover, storage.

use crate::codec;
use crate::state::GovState;
use crate::store::LocalStore;
use std::collections::BTreeMap;
use tollgate_proto::*;

pub(crate) const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const MINUTE: u64 = 60_000;

fn key(id: &str, team: Option<&str>, customer: Option<&str>) -> VirtualKey {
    VirtualKey {
        id: KeyId::from(id),
        name: id.to_owned(),
        secret_sha256: {
            let mut h = [0u8; 32];
            h[..id.len().min(32)].copy_from_slice(&id.as_bytes()[..id.len().min(32)]);
            h
        },
        secret_prefix: "tg-x".into(),
        team_id: team.map(TeamId::from),
        customer_id: customer.map(CustomerId::from),
        provider_configs: vec![ProviderConfig {
            id: ProviderConfigId::from(format!("pc_{id}").as_str()),
            provider: "mock".into(),
            weight_milli: 1000,
            allowed_models: vec![],
            aliases: BTreeMap::new(),
        }],
        disabled: false,
        created_at_ms: T0,
        rotated_at_ms: None,
    }
}

fn budget(id: &str, owner: Owner, limit: u64, reset: ResetDuration) -> Command {
    Command::CreateBudget(Budget {
        id: BudgetId::from(id),
        owner,
        limit: Usd(limit),
        reset,
        calendar_aligned: true,
        created_at_ms: T0,
    })
}

pub(crate) fn charge(req: &str, key: &str, cost: u64, at_ms: u64) -> Charge {
    Charge {
        request_id: RequestId::from(req),
        key_id: KeyId::from(key),
        provider_config_id: Some(ProviderConfigId::from(format!("pc_{key}").as_str())),
        model: "m".into(),
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        },
        cost: Usd(cost),
        at_ms,
    }
}

/// A customer with a team and two keys, and one budget at every level.
pub(crate) fn world() -> GovState {
    let mut s = GovState::new();
    let setup = world_commands();
    for c in &setup {
        assert_eq!(s.apply(c), Outcome::Done, "{c:?}");
    }
    s
}

fn spent(s: &GovState, budget: &str, at: u64) -> u64 {
    s.budget_status(&BudgetId::from(budget), at)
        .map(|b| b.spent.0)
        .unwrap_or(u64::MAX)
}

#[test]
fn charge_lands_on_every_level_of_the_chain() {
    let mut s = world();
    let chain = s.budget_chain(&"vk_1".into(), Some(&"pc_vk_1".into()));
    let names: Vec<&str> = chain.iter().map(|b| b.as_str()).collect();
    assert_eq!(names, ["bud_pc1", "bud_vk1", "bud_team", "bud_cus"]);
    let out = s.apply(&Command::ChargeBatch {
        charges: vec![charge("r1", "vk_1", 50, T0 + 1)],
    });
    assert_eq!(
        out,
        Outcome::Charged {
            applied: 1,
            duplicates: 0
        }
    );
    for (b, want) in [
        ("bud_pc1", 50),
        ("bud_vk1", 50),
        ("bud_team", 50),
        ("bud_cus", 50),
    ] {
        assert_eq!(spent(&s, b, T0 + 2), want, "{b}");
    }
    // The other key shares team and customer budgets only.
    s.apply(&Command::ChargeBatch {
        charges: vec![charge("r2", "vk_2", 7, T0 + 3)],
    });
    for (b, want) in [
        ("bud_pc1", 50),
        ("bud_vk1", 50),
        ("bud_team", 57),
        ("bud_cus", 57),
    ] {
        assert_eq!(spent(&s, b, T0 + 4), want, "{b}");
    }
    assert_eq!(s.usage_of_team(&"team_a".into()).requests, 2);
    assert_eq!(s.usage_of_customer(&"cus_a".into()).spent, Usd(57));
    assert_eq!(s.usage_of_key(&"vk_1".into()).input_tokens, 10);
}

#[test]
fn duplicate_charges_are_ignored() {
    let mut s = world();
    let batch = vec![
        charge("r1", "vk_1", 10, T0),
        charge("r1", "vk_1", 10, T0),
        charge("r2", "vk_1", 10, T0),
    ];
    assert_eq!(
        s.apply(&Command::ChargeBatch {
            charges: batch.clone()
        }),
        Outcome::Charged {
            applied: 2,
            duplicates: 1
        }
    );
    assert_eq!(
        s.apply(&Command::ChargeBatch { charges: batch }),
        Outcome::Charged {
            applied: 0,
            duplicates: 3
        }
    );
    assert_eq!(spent(&s, "bud_vk1", T0), 20);
    assert_eq!(s.usage_of_key(&"vk_1".into()).requests, 2);
}

#[test]
fn windows_roll_over_on_the_command_timestamp() {
    let mut s = world();
    s.apply(&Command::ChargeBatch {
        charges: vec![charge("r1", "vk_1", 10, T0 + 30_000)],
    });
    // Next minute: the minute budget starts from zero, the hour budget keeps counting.
    s.apply(&Command::ChargeBatch {
        charges: vec![charge("r2", "vk_1", 5, T0 + MINUTE + 1)],
    });
    assert_eq!(spent(&s, "bud_pc1", T0 + MINUTE + 2), 5);
    assert_eq!(spent(&s, "bud_vk1", T0 + MINUTE + 2), 15);
    // A late charge from the ended minute counts in the hour but not in the new minute.
    s.apply(&Command::ChargeBatch {
        charges: vec![charge("r3", "vk_1", 3, T0 + 59_000)],
    });
    assert_eq!(spent(&s, "bud_pc1", T0 + MINUTE + 2), 5);
    assert_eq!(spent(&s, "bud_vk1", T0 + MINUTE + 2), 18);
    // Reading a later window without a charge in it shows zero.
    assert_eq!(spent(&s, "bud_vk1", T0 + 60 * MINUTE), 0);
}

#[test]
fn rejections_change_nothing() {
    let mut s = world();
    let before = s.clone();
    let cases = vec![
        Command::CreateKey(key("vk_3", Some("team_missing"), None)),
        Command::CreateKey(key("vk_1", None, None)),
        budget(
            "bud_x",
            Owner::Team("team_missing".into()),
            1,
            ResetDuration::Day,
        ),
        budget(
            "bud_x",
            Owner::ProviderConfig("pc_missing".into()),
            1,
            ResetDuration::Day,
        ),
        Command::DeleteTeam {
            id: "team_a".into(),
        },
        Command::DeleteCustomer { id: "cus_a".into() },
        Command::SetKeyDisabled {
            id: "vk_missing".into(),
            disabled: true,
        },
        Command::DeleteBudget {
            id: "bud_missing".into(),
        },
    ];
    for c in cases {
        let out = s.apply(&c);
        assert!(
            matches!(out, Outcome::NotFound { .. } | Outcome::Conflict(_)),
            "{c:?} gave {out:?}"
        );
        assert_eq!(s, before, "{c:?} changed state");
    }
}

#[test]
fn rotate_and_delete_keys() {
    let mut s = world();
    let old = key("vk_1", None, None).secret_sha256;
    let new = [9u8; 32];
    let rotate = Command::RotateKey {
        id: "vk_1".into(),
        secret_sha256: new,
        secret_prefix: "tg-n".into(),
        at_ms: T0,
    };
    assert_eq!(s.apply(&rotate), Outcome::Done);
    assert!(s.key_by_secret_hash(&old).is_none());
    assert_eq!(
        s.key_by_secret_hash(&new).map(|k| k.id.as_str()),
        Some("vk_1")
    );
    assert_eq!(
        s.apply(&Command::DeleteKey { id: "vk_1".into() }),
        Outcome::Done
    );
    assert!(s.key_by_secret_hash(&new).is_none());
    assert!(
        s.budgets().get(&BudgetId::from("bud_vk1")).is_none(),
        "key budget removed with the key"
    );
    assert!(
        s.budgets().get(&BudgetId::from("bud_pc1")).is_none(),
        "provider-config budget removed with the key"
    );
}

#[test]
fn a_create_or_delete_applied_twice_shows_its_one_effect() {
    let mut s = GovState::default();
    let create = Command::CreateKey(key("vk_9", None, None));
    assert!(!s.shows(&create));
    assert_eq!(s.apply(&create), Outcome::Done);
    // Proposed again after a leader died answering: a conflict, and the effect is there.
    assert!(matches!(s.apply(&create), Outcome::Conflict(_)));
    assert!(s.shows(&create));
    // Not the same key: not its effect.
    let mut other = key("vk_9", None, None);
    other.name = "someone else".into();
    assert!(!s.shows(&Command::CreateKey(other)));
    let delete = Command::DeleteKey { id: "vk_9".into() };
    assert!(!s.shows(&delete));
    assert_eq!(s.apply(&delete), Outcome::Done);
    assert!(matches!(s.apply(&delete), Outcome::NotFound { .. }));
    assert!(s.shows(&delete));
    // Updates are idempotent by themselves: never "shown".
    assert!(!s.shows(&Command::SetKeyDisabled {
        id: "vk_9".into(),
        disabled: true
    }));
}

#[test]
fn old_request_ids_are_forgotten_after_the_horizon() {
    let mut s = world();
    s.apply(&Command::ChargeBatch {
        charges: vec![charge("r1", "vk_2", 1, T0)],
    });
    let later = T0 + crate::state::DEDUP_HORIZON_MS + 1;
    s.apply(&Command::ChargeBatch {
        charges: vec![charge("r2", "vk_2", 1, later)],
    });
    let out = s.apply(&Command::ChargeBatch {
        charges: vec![charge("r1", "vk_2", 1, later)],
    });
    assert_eq!(
        out,
        Outcome::Charged {
            applied: 1,
            duplicates: 0
        }
    );
}

#[test]
fn snapshot_round_trips_through_the_codec() {
    let mut s = world();
    s.apply(&Command::ChargeBatch {
        charges: vec![charge("r1", "vk_1", 10, T0)],
    });
    let bytes = codec::encode(&s).expect("encode");
    let back: GovState = codec::decode(&bytes).expect("decode");
    assert_eq!(back, s);
    assert!(codec::decode::<GovState>(&bytes[..bytes.len() / 2]).is_err());
}

#[test]
fn store_recovers_from_snapshot_and_log() {
    let dir = std::env::temp_dir().join(format!("tollgate-store-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut expect = world();
    {
        let (store, rec) = LocalStore::open(&dir).expect("open");
        assert_eq!(rec.last_index, 0);
        let mut s = GovState::new();
        let mut index = 0;
        let setup = world_commands();
        for c in &setup {
            index += 1;
            store.append(index, c).expect("append");
            s.apply(c);
        }
        store.snapshot(index, &s).expect("snapshot");
        let c = Command::ChargeBatch {
            charges: vec![charge("r1", "vk_1", 10, T0)],
        };
        index += 1;
        store.append(index, &c).expect("append");
        expect.apply(&c);
        store.flush().expect("flush");
    }
    let (_store, rec) = LocalStore::open(&dir).expect("reopen");
    assert_eq!(rec.state, expect);
    assert_eq!((rec.snapshot_index, rec.last_index), (8, 9));
    let _ = std::fs::remove_dir_all(&dir);
}

pub(crate) fn world_commands() -> Vec<Command> {
    vec![
        Command::CreateCustomer(Customer {
            id: "cus_a".into(),
            name: "a".into(),
            created_at_ms: T0,
        }),
        Command::CreateTeam(Team {
            id: "team_a".into(),
            name: "a".into(),
            customer_id: Some("cus_a".into()),
            created_at_ms: T0,
        }),
        Command::CreateKey(key("vk_1", Some("team_a"), None)),
        Command::CreateKey(key("vk_2", Some("team_a"), None)),
        budget(
            "bud_cus",
            Owner::Customer("cus_a".into()),
            1000,
            ResetDuration::Day,
        ),
        budget(
            "bud_team",
            Owner::Team("team_a".into()),
            500,
            ResetDuration::Day,
        ),
        budget(
            "bud_vk1",
            Owner::VirtualKey("vk_1".into()),
            300,
            ResetDuration::Hour,
        ),
        budget(
            "bud_pc1",
            Owner::ProviderConfig("pc_vk_1".into()),
            200,
            ResetDuration::Minute,
        ),
    ]
}

/// Drives a future that never waits on a reactor (sled's flush completes on its own thread).
#[test]
fn chains_follow_budget_and_limit_changes() {
    let mut s = world();
    let key = KeyId::from("vk_1");
    let pc = ProviderConfigId::from("pc_vk_1");
    assert_eq!(
        s.apply(&Command::DeleteBudget {
            id: "bud_team".into()
        }),
        Outcome::Done
    );
    let names: Vec<String> = s
        .budget_chain(&key, Some(&pc))
        .iter()
        .map(|b| b.to_string())
        .collect();
    assert_eq!(names, ["bud_pc1", "bud_vk1", "bud_cus"]);
    let limit = RateLimit {
        id: "rl_1".into(),
        owner: Owner::Team("team_a".into()),
        request_max: Some(1),
        request_window: Some(ResetDuration::Minute),
        token_max: None,
        token_window: None,
        created_at_ms: T0,
    };
    assert_eq!(s.apply(&Command::CreateRateLimit(limit)), Outcome::Done);
    assert_eq!(s.rate_limit_chain(&key, None).len(), 1);
    // Removing the key's provider configs removes their budgets from every chain.
    let patch = KeyPatch {
        provider_configs: Some(vec![]),
        ..KeyPatch::default()
    };
    assert_eq!(
        s.apply(&Command::UpdateKey {
            id: key.clone(),
            patch
        }),
        Outcome::Done
    );
    assert!(!s.budgets().contains_key(&BudgetId::from("bud_pc1")));
    assert_eq!(
        s.apply(&Command::DeleteRateLimit { id: "rl_1".into() }),
        Outcome::Done
    );
    assert!(s.rate_limit_chain(&key, None).is_empty());
}

#[test]
fn changing_a_budget_window_keeps_counting() {
    let mut s = world();
    // bud_vk1 is 1h calendar-aligned; spend in it, then widen it to a day mid-hour.
    let at = T0 + 330 * MINUTE; // 05:30, inside the 05:00 hour
    s.apply(&Command::ChargeBatch {
        charges: vec![charge("r1", "vk_1", 10, at)],
    });
    let widen = Command::UpdateBudget {
        id: "bud_vk1".into(),
        limit: None,
        reset: Some(ResetDuration::Day),
        calendar_aligned: None,
        at_ms: at + 1,
    };
    assert_eq!(s.apply(&widen), Outcome::Done);
    assert_eq!(
        spent(&s, "bud_vk1", at + 2),
        10,
        "spend carried into the new window"
    );
    s.apply(&Command::ChargeBatch {
        charges: vec![charge("r2", "vk_1", 5, at + 3)],
    });
    assert_eq!(
        spent(&s, "bud_vk1", at + 4),
        15,
        "charges after the change still count"
    );
}

#[test]
fn provider_config_ids_are_unique_across_keys() {
    let mut s = world();
    let mut thief = key("vk_3", None, None);
    thief.provider_configs[0].id = "pc_vk_1".into();
    assert!(matches!(
        s.apply(&Command::CreateKey(thief)),
        Outcome::Conflict(_)
    ));
    let mut twice = key("vk_4", None, None);
    twice
        .provider_configs
        .push(twice.provider_configs[0].clone());
    assert!(matches!(
        s.apply(&Command::CreateKey(twice)),
        Outcome::Conflict(_)
    ));
}

fn grant(s: &mut GovState, budget: &str, node: u64, want: u64, at_ms: u64) -> Outcome {
    s.apply(&Command::GrantLease {
        budget_id: BudgetId::from(budget),
        node,
        want: Usd(want),
        at_ms,
    })
}

fn held(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Leased { held, .. } => held.0,
        other => panic!("not leased: {other:?}"),
    }
}

#[test]
fn leases_are_granted_within_the_room_and_consumed_by_their_node() {
    let mut s = world();
    // bud_vk1: 300 an hour. Node 1 takes 200, node 2 asks 200 and gets the 100 left.
    assert_eq!(held(&grant(&mut s, "bud_vk1", 1, 200, T0 + 1)), 200);
    assert_eq!(held(&grant(&mut s, "bud_vk1", 2, 200, T0 + 2)), 100);
    assert_eq!(held(&grant(&mut s, "bud_vk1", 3, 1, T0 + 3)), 0);
    // Node 1 charges 50: its lease shrinks, the room stays zero.
    s.apply(&Command::NodeChargeBatch {
        node: 1,
        charges: vec![charge("r1", "vk_1", 50, T0 + 4)],
    });
    assert_eq!(spent(&s, "bud_vk1", T0 + 5), 50);
    let leases: Vec<(u64, u64)> = s
        .escrow()
        .of_budget(&BudgetId::from("bud_vk1"))
        .map(|(n, l)| (n, l.outstanding.0))
        .collect();
    assert_eq!(leases, vec![(1, 150), (2, 100)]);
    assert_eq!(held(&grant(&mut s, "bud_vk1", 1, 10, T0 + 6)), 150);
    // A replayed batch consumes nothing twice.
    s.apply(&Command::NodeChargeBatch {
        node: 1,
        charges: vec![charge("r1", "vk_1", 50, T0 + 4)],
    });
    assert_eq!(held(&grant(&mut s, "bud_vk1", 1, 0, T0 + 7)), 150);
    // Node 2 drains: its 100 is room again.
    s.apply(&Command::ReleaseLeases {
        node: 2,
        budget_id: None,
    });
    assert_eq!(held(&grant(&mut s, "bud_vk1", 3, 500, T0 + 8)), 100);
}

#[test]
fn leases_start_from_zero_in_a_new_window_and_go_with_their_budget() {
    let mut s = world();
    assert_eq!(held(&grant(&mut s, "bud_pc1", 1, 200, T0 + 1)), 200);
    s.apply(&Command::NodeChargeBatch {
        node: 1,
        charges: vec![charge("r1", "vk_1", 120, T0 + 2)],
    });
    // The next minute: the whole limit again, and the old lease is void.
    let next = grant(&mut s, "bud_pc1", 2, 500, T0 + MINUTE + 1);
    assert_eq!(
        next,
        Outcome::Leased {
            held: Usd(200),
            window_start_ms: T0 + MINUTE,
            window_end_ms: T0 + 2 * MINUTE,
        }
    );
    // Asking for an ended window once the ledger moved on is refused.
    s.apply(&Command::NodeChargeBatch {
        node: 2,
        charges: vec![charge("r2", "vk_1", 10, T0 + MINUTE + 2)],
    });
    assert!(matches!(
        grant(&mut s, "bud_pc1", 1, 10, T0 + 3),
        Outcome::Invalid(_)
    ));
    // Unknown budget; a deleted budget takes its leases along.
    assert!(matches!(
        grant(&mut s, "bud_none", 1, 10, T0),
        Outcome::NotFound { .. }
    ));
    s.apply(&Command::DeleteBudget {
        id: BudgetId::from("bud_pc1"),
    });
    assert_eq!(s.escrow().of_budget(&BudgetId::from("bud_pc1")).count(), 0);
    // Leases survive a snapshot.
    grant(&mut s, "bud_team", 3, 42, T0 + MINUTE + 3);
    let bytes = codec::encode(&s).expect("encode");
    let back: GovState = codec::decode(&bytes).expect("decode");
    assert_eq!(back, s);
}

#[test]
fn entries_of_a_later_protocol_wait_for_the_cluster_version() {
    let mut s = world();
    assert_eq!(s.protocol_version(), 1);
    held(&grant(&mut s, "bud_vk1", 1, 200, T0 + 1));
    let drained = Command::NodeDrained {
        node: 1,
        at_ms: T0 + 2,
    };
    assert_eq!(drained.since_version(), 2);
    // Refused, and nothing changes, while the cluster writes protocol 1.
    let before = s.clone();
    assert!(matches!(s.apply(&drained), Outcome::Invalid(_)));
    assert_eq!(s, before);
    // Raised, it applies: the node's leases go back and its drain is recorded.
    assert_eq!(
        s.apply(&Command::SetProtocolVersion { version: 2 }),
        Outcome::Done
    );
    assert_eq!(s.apply(&drained), Outcome::Done);
    assert!(s.escrow().of_node(1).is_empty());
    assert_eq!(s.drained_at().get(&1), Some(&(T0 + 2)));
    // Never lowered.
    s.apply(&Command::SetProtocolVersion { version: 1 });
    assert_eq!(s.protocol_version(), 2);
    // And it survives a snapshot.
    let bytes = codec::encode(&s).expect("encode");
    let back: GovState = codec::decode(&bytes).expect("decode");
    assert_eq!(back.protocol_version(), 2);
    assert_eq!(back, s);
}

/// A node of the previous protocol version reads log entries by their variant index:
/// a new kind goes at the end of `Command`, and no kind moves (one that moved would be
/// read as another kind by such a node, not refused).
#[test]
fn log_entry_kinds_keep_their_wire_tags() {
    let tag = |command: &Command| codec::encode(command).expect("encodes")[0];
    assert_eq!(tag(&Command::DeleteCustomer { id: "c".into() }), 2);
    assert_eq!(
        tag(&Command::ReleaseLeases {
            node: 1,
            budget_id: None
        }),
        20
    );
    assert_eq!(tag(&Command::SetProtocolVersion { version: 2 }), 24);
    assert_eq!(tag(&Command::NodeDrained { node: 1, at_ms: 0 }), 25);
    assert_eq!(
        tag(&Command::AnchorChain(
            tollgate_proto::audit::Anchor::default()
        )),
        28
    );
    assert_eq!(
        tag(&Command::SetKeyLogContent {
            id: "k".into(),
            content: None
        }),
        29
    );
    assert_eq!(
        tag(&Command::MemberChange {
            node: 4,
            change: tollgate_proto::MemberChange::Removed
        }),
        30
    );
    assert_eq!(
        tag(&Command::OutboxCharges {
            node: 1,
            outbox: 2,
            charges: vec![]
        }),
        31
    );
    assert_eq!(tag(&Command::DeleteGuardrail { id: "g".into() }), 34);
}

/// Protocol 6: a node's charges carry where they are in its outbox, and the state keeps
/// each outbox's last mark, not every request id.
mod outbox_charges {
    use super::*;

    fn at(segment: u64, end: u64) -> Option<OutboxMark> {
        Some(OutboxMark { segment, end })
    }

    fn batch(outbox: u64, charges: &[(&str, Option<OutboxMark>)]) -> Command {
        Command::OutboxCharges {
            node: 1,
            outbox,
            charges: charges
                .iter()
                .map(|(id, mark)| OutboxCharge {
                    charge: charge(id, "vk_1", 10, T0),
                    mark: *mark,
                })
                .collect(),
        }
    }

    fn protocol_6() -> GovState {
        let mut s = world();
        s.apply(&Command::SetProtocolVersion { version: 6 });
        s
    }

    fn charged(applied: u32, duplicates: u32) -> Outcome {
        Outcome::Charged {
            applied,
            duplicates,
        }
    }

    #[test]
    fn a_replayed_batch_is_charged_once() {
        let mut s = protocol_6();
        let first = batch(9, &[("r1", at(1, 100)), ("r2", at(1, 200))]);
        assert_eq!(s.apply(&first), charged(2, 0));
        assert_eq!(s.apply(&first), charged(0, 2));
        // A replay re-cut differently: one old charge, one new.
        let replay = batch(9, &[("r2", at(1, 200)), ("r3", at(2, 50))]);
        assert_eq!(s.apply(&replay), charged(1, 1));
        assert_eq!(s.usage_of_key(&"vk_1".into()).requests, 3);
        assert_eq!(s.usage_of_key(&"vk_1".into()).spent, Usd(30));
        // The same places in another outbox (the node's data was made anew) are new.
        assert_eq!(s.apply(&batch(10, &[("r4", at(1, 100))])), charged(1, 0));
        assert_eq!(s.outbox_marks().mark(1, 9), at(2, 50));
    }

    #[test]
    fn ids_remembered_before_and_charges_without_a_mark_are_deduplicated() {
        let mut s = protocol_6();
        // Charged before the cluster moved to protocol 6, then replayed with a mark.
        s.apply(&Command::NodeChargeBatch {
            node: 1,
            charges: vec![charge("r1", "vk_1", 10, T0)],
        });
        assert_eq!(s.apply(&batch(9, &[("r1", at(1, 100))])), charged(0, 1));
        // Not in the outbox: remembered by id.
        assert_eq!(s.apply(&batch(9, &[("r2", None)])), charged(1, 0));
        assert_eq!(s.apply(&batch(9, &[("r2", None)])), charged(0, 1));
        assert_eq!(s.usage_of_key(&"vk_1".into()).requests, 2);
    }

    #[test]
    fn a_cluster_below_protocol_6_refuses_them_and_snapshots_carry_the_marks() {
        let mut s = world();
        s.apply(&Command::SetProtocolVersion { version: 5 });
        let command = batch(9, &[("r1", at(1, 100))]);
        assert!(matches!(s.apply(&command), Outcome::Invalid(_)));
        // Until an outbox charged, snapshots are protocol 4's bytes.
        let local = crate::snapshot::encode_state(&7u64, &s).expect("encodes");
        let v4 = codec::encode(&(7u64, &s, s.audit(), s.key_log_contents())).expect("encodes");
        assert_eq!(local, v4);
        s.apply(&Command::SetProtocolVersion { version: 6 });
        assert_eq!(s.apply(&command), charged(1, 0));
        let local = crate::snapshot::encode_state(&7u64, &s).expect("encodes");
        let (index, back) = crate::snapshot::decode_state::<u64>(&local).expect("decodes");
        assert_eq!((index, &back), (7, &s));
        assert_eq!(back.outbox_marks().mark(1, 9), at(1, 100));
        let membership = crate::typ::StoredMembership::default();
        let bytes = crate::snapshot::encode_payload(&None, &membership, &s).expect("encodes");
        let (_, _, back) = crate::snapshot::decode_payload(&bytes).expect("decodes");
        assert_eq!(back, s);
    }
}

mod audit_trail {
    //! Admin changes become chained audit events (the same on every replica), failed
    //! logins too; anchors only move forward.
    use crate::audit::event_hash;
    use crate::GovState;
    use tollgate_proto::audit::{Actor, Anchor, AuditMeta};
    use tollgate_proto::{Command, Customer, Outcome};

    fn meta(at_ms: u64) -> AuditMeta {
        AuditMeta {
            at_ms,
            actor: Actor {
                kind: "admin_token".into(),
                id: "bootstrap".into(),
                name: "TOLLGATE_ADMIN_TOKEN".into(),
            },
            source_ip: Some("10.0.0.7".into()),
            request_id: Some(format!("req_{at_ms}")),
        }
    }

    /// A key with no provider configs.
    fn key(id: &str) -> tollgate_proto::VirtualKey {
        tollgate_proto::VirtualKey {
            id: id.into(),
            name: "k".into(),
            secret_sha256: [7; 32],
            secret_prefix: "tg-abc".into(),
            team_id: None,
            customer_id: None,
            provider_configs: Vec::new(),
            disabled: false,
            created_at_ms: 1,
            rotated_at_ms: None,
        }
    }

    fn protocol_3() -> GovState {
        let mut s = GovState::default();
        assert_eq!(
            s.apply(&Command::SetProtocolVersion { version: 3 }),
            Outcome::Done
        );
        s
    }

    #[test]
    fn member_changes_are_events_from_protocol_5() {
        let drain = Command::Audited {
            meta: meta(20),
            command: Box::new(Command::MemberChange {
                node: 2,
                change: tollgate_proto::MemberChange::DrainRequested,
            }),
        };
        let mut s = protocol_3();
        assert!(matches!(s.apply(&drain), Outcome::Invalid(_)));
        assert_eq!(s.audit().events().count(), 0);
        s.apply(&Command::SetProtocolVersion { version: 5 });
        assert_eq!(s.apply(&drain), Outcome::Done);
        let events: Vec<_> = s.audit().events().cloned().collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, "node.drain");
        assert_eq!(
            (events[0].target.kind.as_str(), events[0].target.id.as_str()),
            ("node", "2")
        );
        assert_eq!(events[0].actor.kind, "admin_token");
    }

    #[test]
    fn changes_are_chained_with_before_and_after() {
        let mut s = protocol_3();
        let create = Command::CreateCustomer(Customer {
            id: "cus_1".into(),
            name: "Acme".into(),
            created_at_ms: 5,
        });
        let audited = |at, command: Command| Command::Audited {
            meta: meta(at),
            command: Box::new(command),
        };
        assert_eq!(s.apply(&audited(10, create.clone())), Outcome::Done);
        // A conflict changes nothing and records nothing.
        assert!(matches!(
            s.apply(&audited(11, create)),
            Outcome::Conflict(_)
        ));
        let rename = Command::UpdateCustomer {
            id: "cus_1".into(),
            name: "Acme Ltd".into(),
        };
        assert_eq!(s.apply(&audited(12, rename)), Outcome::Done);
        assert_eq!(
            s.apply(&Command::AuthFailures {
                meta: meta(13),
                count: 4
            }),
            Outcome::Done
        );
        let events: Vec<_> = s.audit().events().cloned().collect();
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            ["customer.create", "customer.update", "admin.auth_failed"]
        );
        assert_eq!(events[0].before, None);
        assert!(events[0]
            .after
            .as_deref()
            .is_some_and(|a| a.contains("Acme")));
        assert!(events[1]
            .before
            .as_deref()
            .is_some_and(|b| b.contains("\"Acme\"")));
        assert!(events[1]
            .after
            .as_deref()
            .is_some_and(|a| a.contains("Acme Ltd")));
        assert_eq!(events[2].actor.kind, "unauthenticated");
        let mut prev = [0u8; 32];
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.prev_hash, prev);
            assert_eq!(e.hash, event_hash(&prev, e));
            prev = e.hash;
        }
        assert_eq!(s.audit().head(), (3, prev));
        // Before protocol 3 an audited command is refused, not applied.
        let mut old = GovState::default();
        let refused = old.apply(&audited(1, Command::DeletePrice { model: "m".into() }));
        assert!(matches!(refused, Outcome::Invalid(_)));
    }

    #[test]
    fn a_key_event_shows_no_secret_hash() {
        let mut s = protocol_3();
        let key = key("vk_1");
        let created = s.apply(&Command::Audited {
            meta: meta(1),
            command: Box::new(Command::CreateKey(key)),
        });
        assert_eq!(created, Outcome::Done);
        let event = s.audit().events().next().cloned().unwrap_or_default();
        let after = event.after.unwrap_or_default();
        assert!(after.contains("tg-abc"), "{after}");
        assert!(
            !after.contains("secret_sha256") && !after.contains("7,7,7"),
            "{after}"
        );
    }

    #[test]
    fn anchors_only_move_forward() {
        let mut s = protocol_3();
        let anchor = |seq, hash| {
            Command::AnchorChain(Anchor {
                node: 2,
                seq,
                hash: [hash; 32],
                at_ms: seq,
            })
        };
        assert_eq!(s.apply(&anchor(10, 1)), Outcome::Done);
        assert_eq!(s.apply(&anchor(10, 1)), Outcome::Done, "a repeat is fine");
        assert_eq!(s.apply(&anchor(20, 2)), Outcome::Done);
        assert!(matches!(s.apply(&anchor(15, 3)), Outcome::Conflict(_)));
        assert!(matches!(s.apply(&anchor(20, 9)), Outcome::Conflict(_)));
        let seqs: Vec<u64> = s.audit().anchors()[&2].iter().map(|a| a.seq).collect();
        assert_eq!(seqs, [10, 20]);
    }

    #[test]
    fn the_trail_rides_in_snapshots_and_old_snapshots_still_read() {
        let mut s = protocol_3();
        s.apply(&Command::AuthFailures {
            meta: meta(1),
            count: 1,
        });
        let membership = crate::typ::StoredMembership::default();
        let bytes = crate::snapshot::encode_payload(&None, &membership, &s).expect("encodes");
        let (_, _, back) = crate::snapshot::decode_payload(&bytes).expect("decodes");
        assert_eq!(back.audit(), s.audit());
        // A protocol 2 snapshot: the state alone.
        let old =
            crate::codec::encode(&(None::<crate::typ::LogId>, &membership, &s)).expect("encodes");
        let (_, _, back) = crate::snapshot::decode_payload(&old).expect("decodes");
        assert_eq!(back.audit().events().count(), 0);
    }

    #[test]
    fn a_keys_log_content_is_kept_until_cleared_or_the_key_goes() {
        use tollgate_proto::LogContent;
        let mut s = protocol_3();
        let set = |content| Command::SetKeyLogContent {
            id: "vk_1".into(),
            content,
        };
        // A cluster still writing protocol 3 refuses it (a node of 3 could not read it).
        assert!(!matches!(
            s.apply(&set(Some(LogContent::Off))),
            Outcome::Done | Outcome::NotFound { .. }
        ));
        s.apply(&Command::SetProtocolVersion { version: 4 });
        let key = key("vk_1");
        assert!(matches!(
            s.apply(&set(Some(LogContent::Off))),
            Outcome::NotFound { .. }
        ));
        assert_eq!(s.apply(&Command::CreateKey(key)), Outcome::Done);
        assert_eq!(s.apply(&set(Some(LogContent::Full))), Outcome::Done);
        assert_eq!(s.key_log_content(&"vk_1".into()), Some(LogContent::Full));
        // It rides in snapshots, the single node's and Raft's; older ones read without it.
        let membership = crate::typ::StoredMembership::default();
        let bytes = crate::snapshot::encode_payload(&None, &membership, &s).expect("encodes");
        let (_, _, back) = crate::snapshot::decode_payload(&bytes).expect("decodes");
        assert_eq!(back, s);
        assert_eq!(back.key_log_content(&"vk_1".into()), Some(LogContent::Full));
        let local = crate::snapshot::encode_state(&7u64, &s).expect("encodes");
        let (index, back) = crate::snapshot::decode_state::<u64>(&local).expect("decodes");
        assert_eq!((index, back), (7, s.clone()));
        let v3 = crate::codec::encode(&(7u64, &s, s.audit())).expect("encodes");
        let (_, back) = crate::snapshot::decode_state::<u64>(&v3).expect("decodes");
        assert_eq!(back.key_log_content(&"vk_1".into()), None);
        assert_eq!(back.audit(), s.audit());
        // Cleared, then set again and gone with its key.
        assert_eq!(s.apply(&set(None)), Outcome::Done);
        assert_eq!(s.key_log_content(&"vk_1".into()), None);
        assert_eq!(s.apply(&set(Some(LogContent::Metadata))), Outcome::Done);
        assert_eq!(
            s.apply(&Command::DeleteKey { id: "vk_1".into() }),
            Outcome::Done
        );
        assert!(s.key_log_contents().is_empty());
    }
}

/// Property tests: any bytes decode to a value or an error, never a panic or an
/// allocation the bytes cannot back (a log entry, a snapshot, a peer frame, an outbox
/// record all arrive as bytes that may be torn or hostile). `PROPTEST_CASES` sets how
/// many inputs each tries.
mod codec_properties {
    use crate::codec::{decode, encode};
    use crate::GovState;
    use proptest::prelude::*;
    use tollgate_proto::peer::Envelope;
    use tollgate_proto::{Charge, Command};

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Command>(&bytes);
            let _ = decode::<Charge>(&bytes);
            let _ = decode::<Envelope>(&bytes);
            let _ = decode::<(u64, GovState)>(&bytes);
        }

        #[test]
        fn a_claimed_length_beyond_the_bytes_fails_without_allocating_it(
            len in 1u64 << 20..1u64 << 29,
            tail in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            // An envelope whose body claims up to half a GiB: refused for lack of bytes.
            let mut bytes = encode(&Envelope { protocol_version: 1, kind: 1, body: Vec::new() })
                .unwrap_or_default();
            bytes.truncate(bytes.len() - 1);
            bytes.push(0xfc);
            bytes.extend_from_slice(&(len as u32).to_le_bytes());
            bytes.extend_from_slice(&tail);
            prop_assert!(decode::<Envelope>(&bytes).is_err());
        }

        #[test]
        fn commands_round_trip(n in any::<u64>(), name in "[ -~]{0,40}") {
            let command = Command::UpdateCustomer { id: format!("cus_{n}").as_str().into(), name };
            let bytes = encode(&command).unwrap_or_default();
            prop_assert_eq!(decode::<Command>(&bytes).ok(), Some(command));
        }
    }
}

/// Protocol 7: guardrail policies, their chain, their life with their scope, snapshots.
mod guardrails {
    use super::*;

    fn guardrail(id: &str, scope: GuardScope) -> Guardrail {
        Guardrail {
            id: id.into(),
            name: id.to_owned(),
            scope,
            detectors: vec![
                Detector::Secrets,
                Detector::Pii {
                    entities: vec![PiiEntity::Email],
                },
            ],
            action: GuardAction::Redact,
            direction: GuardDirection::Both,
            created_at_ms: T0,
        }
    }

    fn ids<'a>(it: impl Iterator<Item = &'a Guardrail>) -> Vec<&'a str> {
        it.map(|g| g.id.as_str()).collect()
    }

    #[test]
    fn guardrails_apply_by_scope_and_go_with_it() {
        let mut s = GovState::new();
        let create = Command::CreateGuardrail(guardrail("gr_g", GuardScope::Global));
        assert!(
            matches!(s.apply(&create), Outcome::Invalid(_)),
            "gated at 7"
        );
        s.apply(&Command::SetProtocolVersion { version: 7 });
        assert_eq!(s.apply(&create), Outcome::Done);
        assert!(matches!(s.apply(&create), Outcome::Conflict(_)));
        s.apply(&Command::CreateCustomer(Customer {
            id: "cus_1".into(),
            name: "c".into(),
            created_at_ms: T0,
        }));
        s.apply(&Command::CreateTeam(Team {
            id: "team_1".into(),
            name: "t".into(),
            customer_id: Some("cus_1".into()),
            created_at_ms: T0,
        }));
        s.apply(&Command::CreateKey(key("vk_1", Some("team_1"), None)));
        s.apply(&Command::CreateKey(key("vk_2", None, None)));
        let missing = guardrail("gr_x", GuardScope::Team("team_missing".into()));
        assert!(matches!(
            s.apply(&Command::CreateGuardrail(missing)),
            Outcome::NotFound { .. }
        ));
        for g in [
            guardrail("gr_c", GuardScope::Customer("cus_1".into())),
            guardrail("gr_t", GuardScope::Team("team_1".into())),
            guardrail("gr_k", GuardScope::VirtualKey("vk_1".into())),
            guardrail("gr_u", GuardScope::User("alice".into())),
        ] {
            assert_eq!(s.apply(&Command::CreateGuardrail(g)), Outcome::Done);
        }
        let k1 = s.keys()[&KeyId::from("vk_1")].clone();
        let k2 = s.keys()[&KeyId::from("vk_2")].clone();
        // The customer comes through the key's team.
        assert_eq!(
            ids(s.guardrails_for(&k1, None)),
            ["gr_c", "gr_g", "gr_k", "gr_t"]
        );
        assert_eq!(ids(s.guardrails_for(&k2, Some("alice"))), ["gr_g", "gr_u"]);
        // Replaced whole, creation time kept.
        let mut changed = guardrail("gr_g", GuardScope::Global);
        changed.action = GuardAction::Block;
        changed.created_at_ms = T0 + MINUTE;
        assert_eq!(s.apply(&Command::UpdateGuardrail(changed)), Outcome::Done);
        let g = &s.guardrails()[&GuardrailId::from("gr_g")];
        assert_eq!((g.action, g.created_at_ms), (GuardAction::Block, T0));
        // Snapshots carry them; the state reads back equal.
        let local = crate::snapshot::encode_state(&7u64, &s).expect("encodes");
        let (index, back) = crate::snapshot::decode_state::<u64>(&local).expect("decodes");
        assert_eq!((index, &back), (7, &s));
        // Gone with their key; deleted by id.
        assert_eq!(
            s.apply(&Command::DeleteKey { id: "vk_1".into() }),
            Outcome::Done
        );
        assert!(!s.guardrails().contains_key(&GuardrailId::from("gr_k")));
        assert_eq!(
            s.apply(&Command::DeleteGuardrail { id: "gr_u".into() }),
            Outcome::Done
        );
        assert!(matches!(
            s.apply(&Command::DeleteGuardrail { id: "gr_u".into() }),
            Outcome::NotFound { .. }
        ));
    }
}
