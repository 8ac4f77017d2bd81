//! What a stream is expected to output, from recent reality: per virtual key and
//! upstream model, the 95th percentile of the last answers' output tokens, never below
//! a floor. A metered stream reserves this (at most its `max_tokens`) instead of its
//! worst case, and its relay extends the reservation if the answer runs longer. Bounded:
//! the last `WINDOW` answers per pair, `MAX_PAIRS` pairs (the least recently used goes).
//!
//! And how a stream's text counts as tokens before the provider reports them: per
//! upstream model, the densest of the last `COUNTING_WINDOW` answers (fewest bytes per
//! reported token), so that metering counts at least what the provider will bill.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use tollgate_proto::KeyId;

/// Answers remembered per key and model.
const WINDOW: usize = 32;
/// Key-and-model pairs remembered.
const MAX_PAIRS: usize = 10_000;
/// The percentile of recent outputs a stream reserves.
const PERCENTILE: usize = 95;
/// Answers whose bytes per token are remembered per model.
const COUNTING_WINDOW: usize = 16;
/// Models whose counting is remembered; the others count at `BytesPerToken::UNLEARNED`.
const MAX_MODELS: usize = 1_024;
/// Answers with fewer output tokens teach nothing (a short tool call says little).
const MIN_SAMPLE_TOKENS: u64 = 32;

/// How streamed text counts as output tokens until the provider reports them: bytes per
/// token, in thousandths. An unmetered stream that ends before reporting (a client that
/// went away) counts four bytes a token (`ESTIMATE`); a metered one counts what recent
/// answers from its model showed, at their densest (`OutputEstimates::bytes_per_token`),
/// or two bytes a token (`UNLEARNED`) before any, so that code and other languages are
/// not under-counted and the reservation stays ahead of what the provider will report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BytesPerToken(pub u64);

impl BytesPerToken {
    pub const ESTIMATE: BytesPerToken = BytesPerToken(4_000);
    pub const UNLEARNED: BytesPerToken = BytesPerToken(2_000);
    /// The range a learned figure is kept in: a token of at least one byte, and at most
    /// eight (a provider's odd report cannot make metering count almost nothing).
    pub const DENSEST: BytesPerToken = BytesPerToken(1_000);
    pub const SPARSEST: BytesPerToken = BytesPerToken(8_000);

    /// The tokens `bytes` count for, rounded up.
    pub fn tokens(self, bytes: u64) -> u64 {
        let tokens = u128::from(bytes) * 1_000;
        u64::try_from(tokens.div_ceil(u128::from(self.0.max(1)))).unwrap_or(u64::MAX)
    }
}

impl Default for BytesPerToken {
    fn default() -> Self {
        BytesPerToken::ESTIMATE
    }
}

struct Recent {
    outputs: VecDeque<u64>,
    /// Their percentile, kept at every record so that a lookup is a read.
    expected: u64,
    /// When it was last recorded (a counter), for eviction.
    used: u64,
}

/// The remembered answers per key, then per model (looked up without allocating), and
/// the counter that orders their use.
#[derive(Default)]
struct Table {
    clock: u64,
    pairs: usize,
    keys: BTreeMap<KeyId, BTreeMap<String, Recent>>,
}

impl Table {
    /// Forgets the least recently recorded pair.
    fn evict_oldest(&mut self) {
        let oldest = self
            .keys
            .iter()
            .flat_map(|(key, models)| models.iter().map(move |(model, r)| (r.used, key, model)))
            .min_by_key(|(used, ..)| *used)
            .map(|(_, key, model)| (key.clone(), model.clone()));
        let Some((key, model)) = oldest else { return };
        if let Some(models) = self.keys.get_mut(&key) {
            models.remove(&model);
            self.pairs -= 1;
            if models.is_empty() {
                self.keys.remove(&key);
            }
        }
    }
}

/// Recent output sizes per key and model.
pub struct OutputEstimates {
    floor: u64,
    table: Mutex<Table>,
    /// Per model: the last answers' bytes per token (thousandths), and their least.
    counting: Mutex<BTreeMap<String, (VecDeque<u64>, u64)>>,
}

impl OutputEstimates {
    /// Estimates that never go below `floor` output tokens.
    pub fn new(floor: u64) -> OutputEstimates {
        OutputEstimates {
            floor,
            table: Mutex::default(),
            counting: Mutex::default(),
        }
    }

    /// How a metered stream from `model` counts its text until the output is reported.
    pub fn bytes_per_token(&self, model: &str) -> BytesPerToken {
        let counting = self.counting.lock().unwrap_or_else(|e| e.into_inner());
        counting
            .get(model)
            .map_or(BytesPerToken::UNLEARNED, |(_, densest)| {
                BytesPerToken(*densest)
            })
    }

    /// Learns from an answer of `model` that streamed `bytes` of text for `tokens`
    /// reported output tokens.
    pub fn learn_counting(&self, model: &str, bytes: u64, tokens: u64) {
        if tokens < MIN_SAMPLE_TOKENS {
            return;
        }
        let ratio = (u128::from(bytes) * 1_000 / u128::from(tokens)).clamp(
            u128::from(BytesPerToken::DENSEST.0),
            u128::from(BytesPerToken::SPARSEST.0),
        ) as u64;
        let mut counting = self.counting.lock().unwrap_or_else(|e| e.into_inner());
        if !counting.contains_key(model) && counting.len() >= MAX_MODELS {
            return;
        }
        let (samples, densest) = counting
            .entry(model.to_owned())
            .or_insert_with(|| (VecDeque::with_capacity(COUNTING_WINDOW), 0));
        if samples.len() == COUNTING_WINDOW {
            samples.pop_front();
        }
        samples.push_back(ratio);
        *densest = samples.iter().copied().min().unwrap_or(ratio);
    }

    /// The output tokens a stream from `key` to `model` is expected to use.
    pub fn expected(&self, key: &KeyId, model: &str) -> u64 {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table
            .keys
            .get(key)
            .and_then(|models| models.get(model))
            .map_or(0, |r| r.expected)
            .max(self.floor)
    }

    /// Records an answer's output tokens.
    pub fn record(&self, key: &KeyId, model: &str, output_tokens: u64) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.clock += 1;
        let clock = table.clock;
        let known = table.keys.get(key).is_some_and(|m| m.contains_key(model));
        if !known {
            if table.pairs >= MAX_PAIRS {
                table.evict_oldest();
            }
            table.pairs += 1;
        }
        let recent = table
            .keys
            .entry(key.clone())
            .or_default()
            .entry(model.to_owned())
            .or_insert_with(|| Recent {
                outputs: VecDeque::with_capacity(WINDOW),
                expected: 0,
                used: 0,
            });
        if recent.outputs.len() == WINDOW {
            recent.outputs.pop_front();
        }
        recent.outputs.push_back(output_tokens);
        recent.used = clock;
        let mut sorted: Vec<u64> = recent.outputs.iter().copied().collect();
        sorted.sort_unstable();
        let at = (sorted.len() * PERCENTILE).div_ceil(100).saturating_sub(1);
        recent.expected = sorted.get(at).copied().unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_until_answers_say_more_then_their_95th_percentile() {
        let e = OutputEstimates::new(1_000);
        let key = KeyId::from("vk_1");
        assert_eq!(e.expected(&key, "m"), 1_000);
        for _ in 0..20 {
            e.record(&key, "m", 300);
        }
        assert_eq!(e.expected(&key, "m"), 1_000, "short answers: the floor");
        // One long answer in twenty is the 95th percentile.
        e.record(&key, "m", 9_000);
        for _ in 0..19 {
            e.record(&key, "m", 5_000);
        }
        assert_eq!(e.expected(&key, "m"), 5_000);
        for _ in 0..3 {
            e.record(&key, "m", 20_000);
        }
        assert_eq!(e.expected(&key, "m"), 20_000);
        // Per model and per key.
        assert_eq!(e.expected(&key, "other"), 1_000);
        assert_eq!(e.expected(&KeyId::from("vk_2"), "m"), 1_000);
        // Only the last WINDOW answers count.
        for _ in 0..WINDOW {
            e.record(&key, "m", 2_000);
        }
        assert_eq!(e.expected(&key, "m"), 2_000);
    }

    #[test]
    fn text_counts_as_the_densest_recent_answers_of_the_model() {
        let e = OutputEstimates::new(10);
        assert_eq!(e.bytes_per_token("m"), BytesPerToken::UNLEARNED);
        // 4 000 bytes for 1 000 tokens, then 3 500 for 1 000.
        e.learn_counting("m", 4_000, 1_000);
        assert_eq!(e.bytes_per_token("m"), BytesPerToken(4_000));
        e.learn_counting("m", 3_500, 1_000);
        assert_eq!(e.bytes_per_token("m"), BytesPerToken(3_500));
        // Short answers teach nothing; odd ones stay within range.
        e.learn_counting("m", 10, 20);
        assert_eq!(e.bytes_per_token("m"), BytesPerToken(3_500));
        e.learn_counting("odd", 100_000, 40);
        assert_eq!(e.bytes_per_token("odd"), BytesPerToken::SPARSEST);
        e.learn_counting("odd", 0, 40);
        assert_eq!(e.bytes_per_token("odd"), BytesPerToken::DENSEST);
        // Only the last COUNTING_WINDOW answers count.
        for _ in 0..COUNTING_WINDOW {
            e.learn_counting("m", 5_000, 1_000);
        }
        assert_eq!(e.bytes_per_token("m"), BytesPerToken(5_000));
        assert_eq!(e.bytes_per_token("other"), BytesPerToken::UNLEARNED);
        assert_eq!(BytesPerToken(3_500).tokens(7_001), 2_001);
        assert_eq!(BytesPerToken::ESTIMATE.tokens(9), 3);
    }

    #[test]
    fn the_least_recently_used_pair_goes_when_full() {
        let e = OutputEstimates::new(10);
        for i in 0..MAX_PAIRS {
            e.record(&KeyId::from(format!("vk_{i}").as_str()), "m", 500);
        }
        e.record(&KeyId::from("vk_0"), "m", 500);
        e.record(&KeyId::from("vk_new"), "m", 500);
        let table = e.table.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(table.pairs, MAX_PAIRS);
        assert_eq!(table.keys.len(), MAX_PAIRS);
        assert!(table.keys.contains_key(&KeyId::from("vk_0")));
        assert!(!table.keys.contains_key(&KeyId::from("vk_1")));
    }
}
