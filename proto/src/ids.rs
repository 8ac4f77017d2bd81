//! Newtype identifiers, so a `TeamId` can never be passed where a `KeyId` is meant.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident = $prefix:literal;)*) => {$(
        #[$doc]
        #[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The prefix every generated id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    )*};
}

id_type! {
    /// A customer: the top of the budget hierarchy.
    CustomerId = "cus_";
    /// A team, optionally belonging to a customer.
    TeamId = "team_";
    /// A virtual key handed to one engineer or service.
    KeyId = "vk_";
    /// One provider entry of a virtual key (provider, weight, allowed models).
    ProviderConfigId = "pc_";
    /// A budget attached to one owner.
    BudgetId = "bud_";
    /// A rate-limit policy attached to one owner.
    RateLimitId = "rl_";
    /// A guardrail policy (protocol 7).
    GuardrailId = "gr_";
    /// One proxied request; charges are idempotent by it.
    RequestId = "req_";
}

/// Hex digits of the start time at the front of a generated request id.
const REQUEST_TIME_DIGITS: usize = 12;
/// Hex digits of a generated request id after its prefix: time, node start, counter.
const REQUEST_ID_DIGITS: usize = REQUEST_TIME_DIGITS + 16 + 8;

impl RequestId {
    /// A request's id: its start time in milliseconds, the node start's random `base`
    /// and the request's number since, in hex. The time lets the request log find the
    /// record from its id without an index of ids.
    pub fn generate(time_ms: u64, base: u64, seq: u64) -> RequestId {
        RequestId(format!(
            "{}{:012x}{:016x}{:08x}",
            Self::PREFIX,
            time_ms & 0xffff_ffff_ffff,
            base,
            seq
        ))
    }

    /// The start time a generated id carries; none for any other id.
    pub fn time_ms(id: &str) -> Option<u64> {
        let digits = id.strip_prefix(Self::PREFIX)?;
        if digits.len() < REQUEST_ID_DIGITS || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(&digits[..REQUEST_TIME_DIGITS], 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn a_generated_request_id_carries_its_time() {
        let id = RequestId::generate(1_796_601_600_123, 0xdead_beef, 7);
        assert_eq!(id.as_str().len(), 4 + 36);
        assert_eq!(RequestId::time_ms(id.as_str()), Some(1_796_601_600_123));
        let later = RequestId::generate(1_796_601_600_123, 0xdead_beef, 1 << 40);
        assert_eq!(RequestId::time_ms(later.as_str()), Some(1_796_601_600_123));
        // Ids of other shapes (older nodes, other tools) carry none.
        assert_eq!(RequestId::time_ms("req_00000000deadbeef00000007"), None);
        assert_eq!(RequestId::time_ms("req_c1_2_0"), None);
        assert_eq!(
            RequestId::time_ms("vk_0196b2c4a5f1000000000000deadbeef00000007"),
            None
        );
        assert_eq!(
            RequestId::time_ms("req_0196b2c4a5fz000000000000deadbeef00000007"),
            None
        );
    }
}
