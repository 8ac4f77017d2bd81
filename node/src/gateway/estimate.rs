//! What a stream is expected to output, from recent reality: per virtual key and
//! upstream model, the 95th percentile of the last answers' output tokens, never below
//! a floor. A metered stream reserves this (at most its `max_tokens`) instead of its
//! worst case, and its relay extends the reservation if the answer runs longer. Bounded:
//! the last `WINDOW` answers per pair, `MAX_PAIRS` pairs (the least recently used goes).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use tollgate_proto::KeyId;

/// Answers remembered per key and model.
const WINDOW: usize = 32;
/// Key-and-model pairs remembered.
const MAX_PAIRS: usize = 10_000;
/// The percentile of recent outputs a stream reserves.
const PERCENTILE: usize = 95;

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
}

impl OutputEstimates {
    /// Estimates that never go below `floor` output tokens.
    pub fn new(floor: u64) -> OutputEstimates {
        OutputEstimates {
            floor,
            table: Mutex::default(),
        }
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
