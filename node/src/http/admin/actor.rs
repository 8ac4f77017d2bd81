//! Who makes the admin call being served (`CONTEXT`, set by the admin-token check for
//! the call's duration), and `audited`, which wraps a write in `Command::Audited` with
//! it once the cluster records the audit trail.

use crate::app::App;
use tollgate_proto::audit::{Actor, AuditMeta};
use tollgate_proto::Command;

/// The protocol version that records the audit trail.
pub const AUDIT_PROTOCOL: u16 = 3;

/// Who makes the admin call being served.
#[derive(Debug, Clone)]
pub struct AdminContext {
    pub actor: Actor,
    pub source_ip: Option<String>,
    pub request_id: String,
}

tokio::task_local! {
    pub static CONTEXT: AdminContext;
}

/// The principal of `TOLLGATE_ADMIN_TOKEN` (the only one until admin principals exist).
pub fn bootstrap_admin() -> Actor {
    Actor {
        kind: "admin_token".into(),
        id: "bootstrap".into(),
        name: "TOLLGATE_ADMIN_TOKEN".into(),
    }
}

/// `command` with who made it, when the call has a context and the cluster records the
/// audit trail.
pub fn audited(app: &App, command: Command) -> Command {
    if app.state().read().protocol_version() < AUDIT_PROTOCOL {
        return command;
    }
    match CONTEXT.try_with(Clone::clone) {
        Ok(context) => Command::Audited {
            meta: AuditMeta {
                at_ms: app.now_ms(),
                actor: context.actor,
                source_ip: context.source_ip,
                request_id: Some(context.request_id),
            },
            command: Box::new(command),
        },
        Err(_) => command,
    }
}
