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
    /// When it was last recorded (a counter), for eviction.
    used: u64,
}

/// The remembered pairs and the counter that orders their use.
#[derive(Default)]
struct Table {
    clock: u64,
    pairs: BTreeMap<(KeyId, String), Recent>,
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
        let Some(recent) = table.pairs.get(&(key.clone(), model.to_owned())) else {
            return self.floor;
        };
        let mut sorted: Vec<u64> = recent.outputs.iter().copied().collect();
        sorted.sort_unstable();
        let at = (sorted.len() * PERCENTILE).div_ceil(100).saturating_sub(1);
        sorted.get(at).copied().unwrap_or(0).max(self.floor)
    }

    /// Records an answer's output tokens.
    pub fn record(&self, key: &KeyId, model: &str, output_tokens: u64) {
        let mut guard = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let Table { clock, pairs } = &mut *guard;
        *clock += 1;
        let pair = (key.clone(), model.to_owned());
        if !pairs.contains_key(&pair) && pairs.len() >= MAX_PAIRS {
            if let Some(oldest) = pairs
                .iter()
                .min_by_key(|(_, r)| r.used)
                .map(|(k, _)| k.clone())
            {
                pairs.remove(&oldest);
            }
        }
        let recent = pairs.entry(pair).or_insert_with(|| Recent {
            outputs: VecDeque::with_capacity(WINDOW),
            used: 0,
        });
        if recent.outputs.len() == WINDOW {
            recent.outputs.pop_front();
        }
        recent.outputs.push_back(output_tokens);
        recent.used = *clock;
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
        assert_eq!(table.pairs.len(), MAX_PAIRS);
        assert!(table
            .pairs
            .contains_key(&(KeyId::from("vk_0"), "m".to_owned())));
        assert!(!table
            .pairs
            .contains_key(&(KeyId::from("vk_1"), "m".to_owned())));
    }
}
