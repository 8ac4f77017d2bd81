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
    /// One proxied request; charges are idempotent by it.
    RequestId = "req_";
}
