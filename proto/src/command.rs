//! Replicated commands and their outcomes. Time travels inside the command.

use crate::{
    Budget, BudgetId, Customer, CustomerId, KeyId, Price, ProviderConfig, ProviderConfigId,
    RateLimit, RateLimitId, RequestId, ResetDuration, Team, TeamId, UnixMs, Usage, Usd, VirtualKey,
};
use serde::{Deserialize, Serialize};

/// What one completed request cost; applied idempotently by `request_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub request_id: RequestId,
    pub key_id: KeyId,
    pub provider_config_id: Option<ProviderConfigId>,
    /// The model name the price was taken from (the upstream model).
    pub model: String,
    pub usage: Usage,
    pub cost: Usd,
    pub at_ms: UnixMs,
}

/// Where a charge's record is in its node's outbox: the segment's number and the offset
/// just past the record. Marks order records as the outbox's log does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OutboxMark {
    pub segment: u64,
    pub end: u64,
}

/// A charge and where its record is in the outbox (`None`: it could not be written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxCharge {
    pub charge: Charge,
    pub mark: Option<OutboxMark>,
}

/// A partial update of a virtual key; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub disabled: Option<bool>,
    pub team_id: Option<Option<TeamId>>,
    pub customer_id: Option<Option<CustomerId>>,
    pub provider_configs: Option<Vec<ProviderConfig>>,
}

/// Every change to governance state. Ids are chosen by the proposer, so applying a
/// command is deterministic on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateCustomer(Customer),
    UpdateCustomer {
        id: CustomerId,
        name: String,
    },
    DeleteCustomer {
        id: CustomerId,
    },
    CreateTeam(Team),
    UpdateTeam {
        id: TeamId,
        name: Option<String>,
        customer_id: Option<Option<CustomerId>>,
    },
    DeleteTeam {
        id: TeamId,
    },
    CreateKey(VirtualKey),
    UpdateKey {
        id: KeyId,
        patch: KeyPatch,
    },
    SetKeyDisabled {
        id: KeyId,
        disabled: bool,
    },
    RotateKey {
        id: KeyId,
        secret_sha256: [u8; 32],
        secret_prefix: String,
        at_ms: UnixMs,
    },
    DeleteKey {
        id: KeyId,
    },
    CreateBudget(Budget),
    UpdateBudget {
        id: BudgetId,
        limit: Option<Usd>,
        reset: Option<ResetDuration>,
        calendar_aligned: Option<bool>,
        /// When the change was made: a new window shape starts from the window holding it.
        at_ms: UnixMs,
    },
    DeleteBudget {
        id: BudgetId,
    },
    CreateRateLimit(RateLimit),
    DeleteRateLimit {
        id: RateLimitId,
    },
    SetPrice(Price),
    DeletePrice {
        model: String,
    },
    ChargeBatch {
        charges: Vec<Charge>,
    },
    /// Tops a node's escrow lease of a budget up by at most `want`, within the room left
    /// in the window holding `at_ms`: `limit − spent − Σ leases` (issue 4).
    GrantLease {
        budget_id: BudgetId,
        node: u64,
        want: Usd,
        at_ms: UnixMs,
    },
    /// A node gives its leases back (of one budget, or all): it drains, or is gone.
    ReleaseLeases {
        node: u64,
        budget_id: Option<BudgetId>,
    },
    /// Charges made by one node: applied as `ChargeBatch`, and each consumes that node's
    /// leases of the budgets it is charged to.
    NodeChargeBatch {
        node: u64,
        charges: Vec<Charge>,
    },
    /// `GrantLease` that also says what the node needs now: a grant leaving the node
    /// with less than `need` is recorded as a shortfall, which asks the other nodes to
    /// give back what they hold and do not use.
    RequestLease {
        budget_id: BudgetId,
        node: u64,
        need: Usd,
        want: Usd,
        at_ms: UnixMs,
    },
    /// A node gives back part of its lease of a budget (what it holds beyond its
    /// requests in flight). Applied only if `seq` is above every return of this node
    /// applied before, so a retried or late duplicate never gives back twice; the node
    /// counts the amount as gone until its own state shows a return of `seq` or later.
    ReturnLease {
        budget_id: BudgetId,
        node: u64,
        amount: Usd,
        seq: u64,
    },
    /// Raises the protocol version the cluster writes (never lowers it). The leader
    /// proposes it once every member speaks `version`; from then on entries of that
    /// version may be proposed (`Command::since_version`).
    SetProtocolVersion {
        version: u16,
    },
    /// Protocol 2. A node finished draining: its leases go back (as `ReleaseLeases` of
    /// every budget) and the cluster records when it drained.
    NodeDrained {
        node: u64,
        at_ms: UnixMs,
    },
    /// Protocol 3. An admin change with who made it: applied as `command`, and, if it
    /// changed anything, recorded as the next audit event.
    Audited {
        meta: crate::audit::AuditMeta,
        command: Box<Command>,
    },
    /// Protocol 3. Failed admin authentication from one address (a node proposes at
    /// most one a minute per address, with how many failed since its last).
    AuthFailures {
        meta: crate::audit::AuditMeta,
        count: u64,
    },
    /// Protocol 3. A node's request-log chain head: later anchors of a node must extend
    /// its chain (a higher sequence).
    AnchorChain(crate::audit::Anchor),
    /// Protocol 4. What the request log keeps of a key's requests; `None`: what the
    /// node's `[logs] content` says.
    SetKeyLogContent {
        id: KeyId,
        content: Option<crate::LogContent>,
    },
    /// Protocol 5. An admin changed the cluster's members in a way the state does not
    /// hold (a drain asked for; a removal, which Raft's own membership entry makes):
    /// applied as nothing, it is proposed inside `Audited` so the trail records it.
    MemberChange {
        node: u64,
        change: MemberChange,
    },
    /// Protocol 6. `NodeChargeBatch` with where each charge is in the node's outbox
    /// `outbox` (an id the outbox chose when it was created). A node proposes its
    /// outbox's charges in the outbox's order, so the state keeps only the last mark
    /// applied of each outbox: a charge at or before it is a duplicate. A charge without
    /// a mark is de-duplicated by its request id, as in `ChargeBatch`.
    OutboxCharges {
        node: u64,
        outbox: u64,
        charges: Vec<OutboxCharge>,
    },
    /// Protocol 7. A new guardrail (its id must be new).
    CreateGuardrail(crate::Guardrail),
    /// Protocol 7. A guardrail replaced whole (its id must exist; its creation time is
    /// kept).
    UpdateGuardrail(crate::Guardrail),
    /// Protocol 7.
    DeleteGuardrail {
        id: crate::GuardrailId,
    },
}

/// What `Command::MemberChange` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// `POST /api/v1/cluster/nodes/{id}/drain` started the node's drain.
    DrainRequested,
    /// `DELETE /api/v1/cluster/nodes/{id}` took the node out of the voters.
    Removed,
}

impl Command {
    /// The protocol version that introduced this kind of entry: a node speaking less
    /// cannot read it, so it is proposed only once the cluster's version is this high.
    pub fn since_version(&self) -> u16 {
        match self {
            Command::NodeDrained { .. } => 2,
            Command::Audited { .. } | Command::AuthFailures { .. } | Command::AnchorChain(_) => 3,
            Command::SetKeyLogContent { .. } => 4,
            Command::MemberChange { .. } => 5,
            Command::OutboxCharges { .. } => 6,
            Command::CreateGuardrail(_)
            | Command::UpdateGuardrail(_)
            | Command::DeleteGuardrail { .. } => 7,
            _ => 1,
        }
    }
}

/// What applying a command did. Rejections are outcomes, not errors: every replica
/// rejects the same command the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Done,
    NotFound {
        what: String,
        id: String,
    },
    Conflict(String),
    Invalid(String),
    Charged {
        applied: u32,
        duplicates: u32,
    },
    /// What the node now holds of the budget, and the window the lease is for.
    Leased {
        held: Usd,
        window_start_ms: UnixMs,
        window_end_ms: UnixMs,
    },
}
