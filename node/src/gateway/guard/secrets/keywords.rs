//! Every occurrence of every keyword (ASCII case ignored, overlapping), found by
//! walking Aho-Corasick's DFA over four parts of the text at once. One walk is a chain
//! of dependent table reads (each state is needed for the next), about 2 ns a byte on
//! these machines whatever the table; four independent chains in one loop keep the
//! core busy, 2.3 times as fast over a Claude Code request (`tollgate-bench
//! guard-bench`).

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::{Builder, DFA};
use aho_corasick::{Anchored, MatchKind};

/// Below this, one walk: the parts' overlaps would cost more than they save.
const SPLIT_FROM: usize = 1024;

pub struct Keywords {
    dfa: DFA,
    start: StateID,
}

/// One occurrence: the keyword's index and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub start: usize,
    pub end: usize,
    pub keyword: usize,
}

impl Keywords {
    pub fn new(words: &[String]) -> Result<Keywords, String> {
        let dfa = Builder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(words)
            .map_err(|e| e.to_string())?;
        let start = dfa.start_state(Anchored::No).map_err(|e| e.to_string())?;
        Ok(Keywords { dfa, start })
    }

    /// Every occurrence in `text`, in no particular order.
    pub fn find_all(&self, text: &[u8], out: &mut Vec<Hit>) {
        if text.len() < SPLIT_FROM {
            return self.walk(text, 0, 0, out);
        }
        // Part k reports what ends in (from[k], to[k]]; its walk starts a keyword's
        // length earlier, so what ends there and starts in the part before is seen.
        let part = text.len().div_ceil(4);
        let back = self.dfa.max_pattern_len().saturating_sub(1);
        let from: [usize; 4] = std::array::from_fn(|k| k * part);
        let walk_from: [usize; 4] = std::array::from_fn(|k| from[k].saturating_sub(back));
        // The four walks side by side for as long as the shortest (each of the first
        // three is `part + back` long at most; the last is what remains).
        let to: [usize; 4] = std::array::from_fn(|k| ((k + 1) * part).min(text.len()));
        let steps = (0..4).map(|k| to[k] - walk_from[k]).min().unwrap_or(0);
        let mut at = walk_from;
        let mut s = [self.start; 4];
        for _ in 0..steps {
            let bytes: [u8; 4] = std::array::from_fn(|k| text[at[k]]);
            s = std::array::from_fn(|k| self.dfa.next_state(Anchored::No, s[k], bytes[k]));
            for p in &mut at {
                *p += 1;
            }
            if s.iter().any(|x| self.dfa.is_special(*x)) {
                for k in 0..4 {
                    if self.dfa.is_special(s[k]) {
                        self.report(s[k], at[k], from[k], out);
                    }
                }
            }
        }
        // Each walk's rest, one at a time.
        for k in 0..4 {
            let mut state = s[k];
            for (i, b) in text[walk_from[k] + steps..to[k]].iter().enumerate() {
                state = self.dfa.next_state(Anchored::No, state, *b);
                if self.dfa.is_special(state) {
                    self.report(state, walk_from[k] + steps + i + 1, from[k], out);
                }
            }
        }
    }

    fn walk(&self, text: &[u8], offset: usize, after: usize, out: &mut Vec<Hit>) {
        let mut state = self.start;
        for (i, b) in text.iter().enumerate() {
            state = self.dfa.next_state(Anchored::No, state, *b);
            if self.dfa.is_special(state) {
                self.report(state, offset + i + 1, after, out);
            }
        }
    }

    /// The keywords that end at `end` in `state`, if past `after`. Out of line: the
    /// walks' loop stays small.
    #[inline(never)]
    fn report(&self, state: StateID, end: usize, after: usize, out: &mut Vec<Hit>) {
        if end <= after || !self.dfa.is_match(state) {
            return;
        }
        for i in 0..self.dfa.match_len(state) {
            let keyword = self.dfa.match_pattern(state, i);
            out.push(Hit {
                start: end - self.dfa.pattern_len(keyword),
                end,
                keyword: keyword.as_usize(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::AhoCorasick;

    /// The same occurrences as the crate's own overlapping search, wherever the parts
    /// split the text (keywords across every boundary, texts of every length).
    #[test]
    fn four_walks_find_what_one_search_finds() {
        let words: Vec<String> = ["key", "ey", "token", "ghp_", "a", "keyboard", "oar"]
            .map(String::from)
            .to_vec();
        let ours = Keywords::new(&words).expect("builds");
        let theirs = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&words)
            .expect("builds");
        let unit = "xKeYboard tOKEN ghp_a ";
        for len in [0, 1, 5, 1023, 1024, 1025, 1031, 4099, 8192] {
            for shift in 0..unit.len() {
                let text: String = unit.chars().cycle().skip(shift).take(len).collect();
                let mut got = Vec::new();
                ours.find_all(text.as_bytes(), &mut got);
                got.sort();
                let mut want: Vec<Hit> = theirs
                    .find_overlapping_iter(&text)
                    .map(|m| Hit {
                        start: m.start(),
                        end: m.end(),
                        keyword: m.pattern().as_usize(),
                    })
                    .collect();
                want.sort();
                assert_eq!(got, want, "len {len} shift {shift}");
            }
        }
    }
}
