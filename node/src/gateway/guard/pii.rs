//! The `pii` detector: candidates found by small regexes (each behind a byte it cannot
//! match without), then validated: an email's domain, a phone number's digits and
//! North American numbering, a card's issuer prefix and Luhn check, a US SSN's area,
//! group and serial rules, an IBAN's country length and mod-97 check, an IP address's
//! parse.
//!
//! # Layout
//! - `validate`: the checks a candidate must pass, one per entity.

use super::verdict::Finding;
use regex::bytes::{Regex, RegexBuilder};
use std::sync::{Arc, OnceLock};
use tollgate_proto::PiiEntity;

struct Patterns {
    email: Regex,
    phone: Regex,
    card: Regex,
    ssn: Regex,
    iban: Regex,
    ipv4: Regex,
    ipv6: Regex,
    ids: [Arc<str>; 6],
}

fn build(pattern: &str) -> Regex {
    // The patterns are constants, tested below; a failure would be caught there.
    RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .unwrap_or_else(|_| Regex::new("$^").unwrap_or_else(|_| unreachable!()))
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        email: build(
            r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b",
        ),
        phone: build(
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b|\+\d{10,15}\b",
        ),
        card: build(r"\b\d(?:[ -]?\d){12,18}\b"),
        ssn: build(r"\b\d{3}-\d{2}-\d{4}\b"),
        iban: build(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
        ipv4: build(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
        ipv6: build(r"[0-9A-Fa-f:]{2,39}"),
        ids: PiiEntity::ALL.map(|e| Arc::from(e.name())),
    })
}

fn id(entity: PiiEntity) -> Arc<str> {
    let p = patterns();
    let at = PiiEntity::ALL
        .iter()
        .position(|e| *e == entity)
        .unwrap_or_default();
    Arc::clone(&p.ids[at])
}

/// Checks a candidate: the match, the text and where the match is in it.
type Validator = fn(&[u8], &[u8], usize, usize) -> bool;

/// The bytes a phone number, card, SSN, IBAN or IPv4 address is made of.
const NUMBERISH: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_digit()
            || c.is_ascii_uppercase()
            || matches!(c, b' ' | b'.' | b'(' | b')' | b'+' | b'-');
        b += 1;
    }
    t
};

/// The bytes an IPv6 address is made of.
const HEXISH: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_hexdigit() || c == b':';
        b += 1;
    }
    t
};

/// Where the next ASCII digit at or after `at` is: eight bytes at a time (a byte `b` is
/// a digit when `b ^ 0x30 < 10`; "some byte below n" is exact for n <= 128).
fn next_digit(text: &[u8], mut at: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(word) = text.get(at..at + 8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let y = u64::from_le_bytes(bytes) ^ (0x30 * ONES);
        if y.wrapping_sub(10 * ONES) & !y & HIGH != 0 {
            break;
        }
        at += 8;
    }
    text.get(at..)?
        .iter()
        .position(u8::is_ascii_digit)
        .map(|i| at + i)
}

/// The maximal runs of `text` whose bytes are all in `set` around each `seed` byte
/// (found by `next`), that hold at least `least` seed bytes.
fn runs(
    text: &[u8],
    set: &[bool; 256],
    next: impl Fn(&[u8], usize) -> Option<usize>,
    seed: impl Fn(u8) -> bool,
    least: usize,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut done = 0;
    let mut from = 0;
    while let Some(at) = next(text, from) {
        let mut start = at;
        while start > done && set[text[start - 1] as usize] {
            start -= 1;
        }
        let mut end = at;
        let mut n = 0;
        while end < text.len() && set[text[end] as usize] {
            n += usize::from(seed(text[end]));
            end += 1;
        }
        if n >= least {
            out.push((start, end));
        }
        done = end;
        from = end + 1;
    }
    out
}

fn next_colon(text: &[u8], at: usize) -> Option<usize> {
    memchr::memchr(b':', text.get(at..)?).map(|i| at + i)
}

/// Every match of `regex` in the candidate `run` of `text` that `valid` accepts. The
/// regex sees one byte either side (which no match can take, but its `\b` needs).
fn matches_in(
    regex: &Regex,
    valid: Validator,
    entity: PiiEntity,
    text: &[u8],
    (start, end): (usize, usize),
    out: &mut Vec<Finding>,
) {
    let from = start.saturating_sub(1);
    let to = (end + 1).min(text.len());
    for m in regex.find_iter(&text[from..to]) {
        let (s, e) = (from + m.start(), from + m.end());
        if valid(&text[s..e], text, s, e) {
            out.push(Finding {
                rule: id(entity),
                start: s,
                end: e,
            });
        }
    }
}

/// Finds the chosen entities in `text`. Numbers are looked for only in runs of the
/// bytes they are made of (one table-driven pass), emails only around an `@`.
pub fn scan(entities: &[PiiEntity], text: &[u8], out: &mut Vec<Finding>) {
    let p = patterns();
    let numbers = entities.iter().any(|e| *e != PiiEntity::Email);
    // Fewest digits of any: an IPv4 address has four.
    let candidates = match numbers {
        true => runs(text, &NUMBERISH, next_digit, |b| b.is_ascii_digit(), 4),
        false => Vec::new(),
    };
    for &entity in entities {
        let (regex, valid): (&Regex, Validator) = match entity {
            PiiEntity::Email => {
                emails(&p.email, text, out);
                continue;
            }
            PiiEntity::Phone => (&p.phone, phone),
            PiiEntity::CreditCard => (&p.card, card),
            PiiEntity::Ssn => (&p.ssn, ssn),
            PiiEntity::Iban => (&p.iban, iban),
            PiiEntity::Ip => (&p.ipv4, ipv4),
        };
        for &run in &candidates {
            matches_in(regex, valid, entity, text, run, out);
        }
        if entity == PiiEntity::Ip {
            for run in runs(text, &HEXISH, next_colon, |b| b == b':', 2) {
                matches_in(&p.ipv6, ipv6, entity, text, run, out);
            }
        }
    }
}

/// Emails: the regex around each `@` (a local part is at most 64 bytes, an address at
/// most 254), each `@` once.
fn emails(regex: &Regex, text: &[u8], out: &mut Vec<Finding>) {
    let mut after = 0;
    for at in memchr::memchr_iter(b'@', text) {
        if at < after {
            continue;
        }
        let from = at.saturating_sub(65).max(after);
        let to = (at + 256).min(text.len());
        if let Some(m) = regex.find(&text[from..to]) {
            let (s, e) = (from + m.start(), from + m.end());
            after = e;
            if email(&text[s..e], text, s, e) {
                out.push(Finding {
                    rule: id(PiiEntity::Email),
                    start: s,
                    end: e,
                });
            }
        }
    }
}

mod validate;
#[cfg(test)]
pub use validate::luhn;
use validate::{card, email, iban, ipv4, ipv6, phone, ssn};

#[cfg(test)]
mod tests;
