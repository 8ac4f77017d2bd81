//! Rules run only around their keywords instead of over the whole text, where that
//! finds exactly what the whole text would, and the cheap test that tells whether a
//! keyword can begin a match at all.
//!
//! `generic-api-key` (most of the cost of code, whose every `key` and `token` makes it a
//! candidate) matches one of its keywords (`access|auth|api|credential|creds|key|
//! passw(or)?d|secret|token`) after at most 50 identifier bytes; after the keyword come
//! at most 23 bytes of name, space and quotes, an operator (`=`, `:`, `=>`, `||`, `,`,
//! ...), at most 5 quotes, spaces or `=`, and a value of at least 10 bytes of
//! `[\w.=+/-]`, which ends its line's run of value bytes. A keyword not followed so
//! (`let key = map.get(id)`, `the token stream`) begins no match and is passed over;
//! around each other one, a window runs from `before` bytes ahead of it to the end of
//! the line holding the byte `WINDOW_AFTER` past it. Overlapping windows are merged, so
//! no match straddles a window's start.

/// A rule run in windows: its id, how far before a keyword a match can start, and
/// whether a keyword ending at an offset of the text can begin a match.
pub struct Windowed {
    pub rule: &'static str,
    pub before: usize,
    pub may_match: fn(&[u8], usize) -> bool,
}

pub const WINDOWED: &[Windowed] = &[Windowed {
    rule: "generic-api-key",
    before: 64,
    may_match: generic_api_key,
}];

pub const WINDOW_AFTER: usize = 256;

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
