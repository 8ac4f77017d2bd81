//! The `pii` detector: candidates found by small regexes (each behind a byte it cannot
//! match without), then validated: an email's domain, a phone number's digits and
//! North American numbering, a card's issuer prefix and Luhn check, a US SSN's area,
//! group and serial rules, an IBAN's country length and mod-97 check, an IP address's
//! parse.

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

fn digits(s: &[u8]) -> Vec<u8> {
    s.iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| b - b'0')
        .collect()
}

fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether the bytes around a match continue it (a longer number, an identifier): a
/// word byte next to it, or one of `extra` followed (or preceded) by a word byte.
fn glued(text: &[u8], start: usize, end: usize, extra: &[u8]) -> bool {
    let at = |i: Option<usize>| i.and_then(|i| text.get(i).copied());
    let before = at(start.checked_sub(1));
    let after = at(Some(end));
    let word = |b: Option<u8>| b.is_some_and(word_byte);
    let joins = |b: Option<u8>| b.is_some_and(|b| extra.contains(&b));
    word(before)
        || word(after)
        || (joins(before) && word(at(start.checked_sub(2))))
        || (joins(after) && word(at(Some(end + 1))))
}

fn email(m: &[u8], _: &[u8], _: usize, _: usize) -> bool {
    let Some(at) = m.iter().position(|b| *b == b'@') else {
        return false;
    };
    let (local, domain) = (&m[..at], &m[at + 1..]);
    !local.starts_with(b".")
        && !local.ends_with(b".")
        && !domain
            .split(|b| *b == b'.')
            .any(|label| label.is_empty() || label.starts_with(b"-") || label.ends_with(b"-"))
}

fn phone(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
    let d = digits(m);
    if !(10..=15).contains(&d.len()) || glued(text, start, end, b".-") {
        return false;
    }
    if m.starts_with(b"+") && !m.starts_with(b"+1") {
        return true;
    }
    // North American numbering: area code and exchange start 2-9.
    let national = &d[d.len() - 10..];
    national[0] >= 2 && national[3] >= 2 && (d.len() == 10 || d[..d.len() - 10] == [1])
}

/// Luhn's check digit test.
pub fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            match i % 2 {
                1 if x * 2 > 9 => x * 2 - 9,
                1 => x * 2,
                _ => x,
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn card(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
    let d = digits(m);
    if !(13..=19).contains(&d.len()) || glued(text, start, end, b"-.") {
        return false;
    }
    // One separator kind at most, and groups as cards print them (4-4-4-4[-3],
    // 4-6-5, 4-6-4): a hex dump of digits is not a card.
    if m.contains(&b' ') && m.contains(&b'-') {
        return false;
    }
    let groups: Vec<usize> = m
        .split(|b| *b == b' ' || *b == b'-')
        .map(<[u8]>::len)
        .collect();
    if groups.len() > 1
        && !matches!(
            groups.as_slice(),
            [4, 4, 4, 4] | [4, 4, 4, 4, 3] | [4, 6, 5] | [4, 6, 4]
        )
    {
        return false;
    }
    let prefix = |n: usize| d[..n].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    // Issuer prefixes and the lengths each issues.
    let len = d.len();
    let issuer = (d[0] == 4 && matches!(len, 13 | 16 | 19))
        || (((51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4))) && len == 16)
        || (matches!(prefix(2), 34 | 37) && len == 15)
        || (matches!(prefix(2), 36 | 38 | 30) && (14..=19).contains(&len))
        || ((matches!(prefix(2), 35 | 65 | 62) || prefix(4) == 6011) && (16..=19).contains(&len));
    issuer && d.iter().any(|x| *x != d[0]) && luhn(&d)
}

fn ssn(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
    if glued(text, start, end, b"-") {
        return false;
    }
    let d = digits(m);
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = u32::from(d[3]) * 10 + u32::from(d[4]);
    let serial = d[5..].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
    area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && m != b"078-05-1120"
        && m != b"219-09-9999"
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

fn iban(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
    if glued(text, start, end, b"") {
        return false;
    }
    let compact: Vec<u8> = m.iter().copied().filter(|b| *b != b' ').collect();
    let Some((_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| compact[..2] == c[..]) else {
        return false;
    };
    if compact.len() != *len {
        return false;
    }
    // Move the first four characters to the end; letters count 10..35; mod 97 is 1.
    let mut rest = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rest = if v >= 10 {
            (rest * 100 + v) % 97
        } else {
            (rest * 10 + v) % 97
        };
    }
    rest == 1
}

/// Addresses that point at no one: loopback, unspecified, broadcast, documentation and
/// multicast ranges.
fn nobodys(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a, b, c) == (192, 0, 2)
                || (a, b, c) == (198, 51, 100)
                || (a, b, c) == (203, 0, 113)
        }
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.segments()[..2] == [0x2001, 0x0db8]
        }
    }
}

fn ipv4(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
    if glued(text, start, end, b".") {
        return false;
    }
    let parsed = std::str::from_utf8(m)
        .ok()
        .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok());
    if parsed.is_some_and(|ip| nobodys(ip.into())) {
        return false;
    }
    m.split(|b| *b == b'.').all(|o| {
        !(o.len() > 1 && o[0] == b'0')
            && o.iter().fold(0u32, |a, &x| a * 10 + u32::from(x - b'0')) <= 255
    })
}

fn ipv6(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
    if glued(text, start, end, b":.") {
        return false;
    }
    let Ok(s) = std::str::from_utf8(m) else {
        return false;
    };
    let groups = s.split(':').filter(|g| !g.is_empty()).count();
    let colons = s.bytes().filter(|b| *b == b':').count();
    let has_digit = s.bytes().any(|b| b.is_ascii_digit());
    // `a::b` is a path in most languages: an address has a digit and three groups, or
    // the full eight.
    (colons == 7 || (groups >= 2 && has_digit && s.contains("::")) || groups >= 3 && has_digit)
        && s.parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| !nobodys(ip.into()))
}

#[cfg(test)]
mod tests;
