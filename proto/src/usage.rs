//! Token usage, per-model prices and the exact integer cost of a request.

use crate::Usd;
use serde::{Deserialize, Serialize};

/// Tokens one request used, in Anthropic's terms (OpenAI usage is mapped onto these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
    }
}

/// Model name under which the default price is stored; used when a model has none.
pub const DEFAULT_PRICE_MODEL: &str = "*";

/// Prices of one model in micro-dollars per million tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub model: String,
    pub input_per_mtok: Usd,
    pub output_per_mtok: Usd,
    pub cache_write_per_mtok: Usd,
    pub cache_read_per_mtok: Usd,
}

impl Price {
    /// Cost of `usage`, rounded up to the next micro-dollar so the gateway never undercharges.
    pub fn cost(&self, usage: &Usage) -> Usd {
        let parts = [
            (usage.input_tokens, self.input_per_mtok),
            (usage.output_tokens, self.output_per_mtok),
            (usage.cache_creation_input_tokens, self.cache_write_per_mtok),
            (usage.cache_read_input_tokens, self.cache_read_per_mtok),
        ];
        let numerator: u128 = parts
            .iter()
            .map(|(tokens, price)| u128::from(*tokens) * u128::from(price.0))
            .sum();
        let micros = numerator.div_ceil(1_000_000);
        Usd(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_integer_and_rounds_up() {
        let price = Price {
            model: "m".into(),
            input_per_mtok: Usd(3_000_000),
            output_per_mtok: Usd(15_000_000),
            cache_write_per_mtok: Usd(3_750_000),
            cache_read_per_mtok: Usd(300_000),
        };
        let cases = [
            (
                Usage {
                    input_tokens: 1_000_000,
                    ..Usage::default()
                },
                3_000_000,
            ),
            (
                Usage {
                    output_tokens: 1,
                    ..Usage::default()
                },
                15,
            ),
            (
                Usage {
                    input_tokens: 1,
                    ..Usage::default()
                },
                3,
            ),
            (
                Usage {
                    cache_read_input_tokens: 1,
                    ..Usage::default()
                },
                1,
            ),
            (
                Usage {
                    input_tokens: 100,
                    output_tokens: 200,
                    cache_creation_input_tokens: 1000,
                    cache_read_input_tokens: 10_000,
                },
                300 + 3000 + 3750 + 3000,
            ),
            (Usage::default(), 0),
        ];
        for (usage, micros) in cases {
            assert_eq!(price.cost(&usage), Usd(micros), "{usage:?}");
        }
    }
}
