//! Rules whose keywords are frequent in code but rarely begin a match: a cheap test of
//! the bytes after each keyword says whether one can, and a rule none of whose keywords
//! pass is not run. Each test is necessary, not sufficient (the regex decides), so what
//! is found is exactly what the whole text holds.
//!
//! `generic-api-key` (most of the cost of code, whose every `key` and `token` makes it a
//! candidate) then runs only around the keywords that pass. It matches one of its
//! keywords (`access|auth|api|credential|creds|key|passw(or)?d|secret|token`) after at
//! most 50 identifier bytes; after the keyword come at most 23 bytes of name, space and
//! quotes, an operator (`=`, `:`, `=>`, `||`, `,`, ...), at most 5 quotes, spaces or
//! `=`, and a value of at least 10 bytes of `[\w.=+/-]`, which ends its line's run of
//! value bytes. A keyword not followed so (`let key = map.get(id)`, `the token stream`)
//! begins no match; around each other one, a window runs from `before` bytes ahead of it
//! to the end of the line holding the byte `WINDOW_AFTER` past it. Overlapping windows
//! are merged, so no match straddles a window's start.
//!
//! `jwt` (`ey` is in every `key` and `they`), `vault-service-token` (`s.` in every
//! `this.`) and `twilio-api-key` (`sk` in `task`) need a long run of token bytes right
//! after the keyword; they run over the whole text (a match may be long) when one has it.

/// A gated rule: its id, whether a keyword of it ending at an offset of the text can
/// begin a match, and, for a rule run in windows, how far before a keyword a match can
/// start.
pub struct Gated {
    pub rule: &'static str,
    pub may_match: fn(&[u8], usize) -> bool,
    pub before: Option<usize>,
}

pub const GATED: &[Gated] = &[
    Gated {
        rule: "generic-api-key",
        may_match: generic_api_key,
        before: Some(64),
    },
    // `\b(ey[a-zA-Z0-9]{17,}\.ey...`
    Gated {
        rule: "jwt",
        may_match: |text, end| {
            run(text, end, u8::is_ascii_alphanumeric) >= 17
                && text.get(end + run(text, end, u8::is_ascii_alphanumeric)) == Some(&b'.')
        },
        before: None,
    },
    // `hvs\.[\w-]{90,120}` or `s\.(?i:[a-z0-9]{24})`
    Gated {
        rule: "vault-service-token",
        may_match: |text, end| {
            run(text, end, |b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')
            }) >= 24
        },
        before: None,
    },
    // `SK[0-9a-fA-F]{32}`
    Gated {
        rule: "twilio-api-key",
        may_match: |text, end| run(text, end, u8::is_ascii_hexdigit) >= 32,
        before: None,
    },
];

pub const WINDOW_AFTER: usize = 256;

/// How many bytes from `at` are of a class.
fn run(text: &[u8], at: usize, class: fn(&u8) -> bool) -> usize {
    text.get(at..)
        .map_or(0, |t| t.iter().take_while(|b| class(b)).count())
}

/// Byte classes of `generic-api-key`'s regex (ASCII, as it runs with Unicode off):
/// what may come between the keyword and the operator (`[ \t\w.-]` and `[\s'"]`), what
/// a value is made of (`[\w.=-]` and `[a-z0-9+/]`), and an operator's first byte.
const BETWEEN: u8 = 1;
const VALUE: u8 = 2;
const OPERATOR: u8 = 4;
const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let word = c.is_ascii_alphanumeric() || c == b'_';
        if word
            || matches!(
                c,
                b'.' | b'-' | b'\'' | b'"' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c
            )
        {
            t[b] |= BETWEEN;
        }
        if word || matches!(c, b'.' | b'=' | b'+' | b'/' | b'-') {
            t[b] |= VALUE;
        }
        if matches!(c, b'=' | b'>' | b':' | b'|' | b'?' | b',') {
            t[b] |= OPERATOR;
        }
        b += 1;
    }
    t
};

/// Whether `generic-api-key` can match with its keyword ending at `end`: an operator
/// within 23 bytes of name, space or quotes, then a run of at least 10 value bytes
/// starting within 9 bytes of it (an operator is at most 4 bytes, then at most 5
/// quotes, spaces or `=`). Necessary, not sufficient: the regex decides.
pub fn generic_api_key(text: &[u8], end: usize) -> bool {
    let class = |b: &u8| CLASSES[usize::from(*b)];
    let Some(ahead) = text.get(end..) else {
        return false;
    };
    let Some(op) = ahead.iter().take(24).position(|b| class(b) & BETWEEN == 0) else {
        return false;
    };
    if class(&ahead[op]) & OPERATOR == 0 {
        return false;
    }
    // A value run starting at most 9 bytes past the operator's first byte.
    let mut run = 0;
    for (i, b) in ahead.iter().enumerate().take(op + 20).skip(op + 1) {
        if class(b) & VALUE != 0 {
            run += 1;
            if run >= 10 {
                return true;
            }
        } else if i > op + 9 {
            return false;
        } else {
            run = 0;
        }
    }
    false
}
