//! Guardrails: content policies on what goes to a provider and what comes back
//! (issue 20). The replicated state holds the policies (`GovState::guardrails`); each
//! node compiles them once per change and checks requests and answers with them.
//!
//! # Layout
//! - `secrets`: the gitleaks rule set (keyword prefilter, candidate regexes, entropy,
//!   allowlists); `gitleaks/` holds the vendored rules, their licence and test fixtures.
//! - `pii`: personal data, found by small regexes and validated.
//! - `policy`: a guardrail compiled, and the checks its admin write must pass.
//! - `json`: byte-level walks over validated JSON (array elements, string values) and
//!   rebuilding a body with strings replaced.
//! - `block`: one block of JSON scanned, and a body's verdict from its blocks'.
//! - `input`: a request body's content blocks, their verdicts cached by hash, and the
//!   verdict of the whole request (block, redact, flag).
//! - `output`: answers: whole bodies, and streams with a hold-back.
//! - `webhook`: external checkers, posted the text with a deadline.
//! - `verdict`: what a check found (findings, hits), for the request record,
//!   `/metrics` and errors.

pub mod block;
pub mod input;
pub mod json;
pub mod output;
pub mod pii;
pub mod policy;
pub mod secrets;
pub mod verdict;
pub mod webhook;

use block::Checked;
use policy::{Plan, Policy};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tollgate_proto::{Guardrail, GuardrailId, VirtualKey};
use tollgate_raft::state::GovState;

/// Content blocks whose verdicts a node remembers. A verdict without findings (the usual
/// one) is a few dozen bytes; one with findings keeps at most `MAX_KEPT_FINDINGS` of them
/// and their redactions (where, and the marker), so even a cache full of hostile blocks
/// stays near a hundred MB, and a normal one at a few MB.
pub const CACHE_ENTRIES: usize = 32_768;

/// A node's guardrails: the compiled policies, the verdict cache and the counters.
pub struct Guards {
    compiled: Mutex<BTreeMap<GuardrailId, (Guardrail, Arc<Policy>)>>,
    pub cache: input::VerdictCache,
    pub counts: Arc<verdict::Counts>,
    pub webhooks: webhook::Client,
}

impl Guards {
    pub fn new(cache_entries: usize) -> Guards {
        Guards {
            compiled: Mutex::default(),
            cache: input::VerdictCache::new(cache_entries),
            counts: Arc::default(),
            webhooks: webhook::Client::default(),
        }
    }

    /// The compiled guardrails of a request by `key` (and `user`): global ones and those
    /// of its customer, team, user and key. A guardrail that does not compile on this
    /// node (the admin API compiled it before proposing it) is logged and left out.
    pub fn plan(&self, state: &GovState, key: &VirtualKey, user: Option<&str>) -> Plan {
        if state.guardrails().is_empty() {
            return Plan::default();
        }
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        let mut plan = Plan::default();
        let mut print = xxhash_rust::xxh3::Xxh3::new();
        for g in state.guardrails_for(key, user) {
            let policy = match compiled.get(&g.id) {
                Some((spec, p)) if spec == g => Arc::clone(p),
                _ => match Policy::compile(g) {
                    Ok(p) => {
                        let p = Arc::new(p);
                        compiled.insert(g.id.clone(), (g.clone(), Arc::clone(&p)));
                        p
                    }
                    Err(e) => {
                        tracing::error!(guardrail = %g.id, error = %e, "guardrail does not compile here; left out");
                        continue;
                    }
                },
            };
            print.update(&policy.print.to_le_bytes());
            plan.policies.push(policy);
        }
        // Forget the compiled form of guardrails that are gone.
        if compiled.len() > state.guardrails().len() {
            compiled.retain(|id, _| state.guardrails().contains_key(id));
        }
        plan.fingerprint = print.digest();
        plan
    }

    /// Checks a request body with the plan's input policies (`input::check`).
    pub async fn check_input(&self, plan: &Plan, body: &[u8]) -> Checked {
        input::check(&self.cache, &self.webhooks, &self.counts, plan, body).await
    }

    /// Checks a whole answer with the plan's output policies.
    pub async fn check_output(&self, plan: &Plan, body: &[u8]) -> Checked {
        output::check_body(&self.webhooks, &self.counts, plan, body).await
    }
}

#[cfg(test)]
mod tests;
