//! The checks a PII candidate must pass: what makes a match an email, a phone number,
//! a card, an SSN, an IBAN or an address of someone.

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

pub fn email(m: &[u8], _: &[u8], _: usize, _: usize) -> bool {
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

pub fn phone(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
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

pub fn card(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
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

pub fn ssn(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
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

pub fn iban(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
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

pub fn ipv4(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
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

pub fn ipv6(m: &[u8], text: &[u8], start: usize, end: usize) -> bool {
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
