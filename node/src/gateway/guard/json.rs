//! Byte-level walks over JSON the parser has already validated: the elements of an
//! array, the string values of a value (object keys skipped), a string's text, and a
//! body rebuilt with some strings replaced. Strings are jumped over with `memchr`, so a
//! walk costs little more than reading the bytes once.

use std::borrow::Cow;

/// Where the string starting at `at` (its opening quote) ends: just past its closing
/// quote, the first quote after an even run of backslashes. Jumps from quote to quote
/// (escapes such as `\n`, frequent in code, cost nothing).
fn string_end(json: &[u8], at: usize) -> Option<usize> {
    let mut from = at + 1;
    loop {
        let quote = from + memchr::memchr(b'"', json.get(from..)?)?;
        let backslashes = json[from..quote]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(quote + 1);
        }
        from = quote + 1;
    }
}

fn skip_space(json: &[u8], mut at: usize) -> usize {
    while at < json.len() && matches!(json[at], b' ' | b'\n' | b'\r' | b'\t') {
        at += 1;
    }
    at
}

/// Where the value starting at `at` ends (validated JSON: a string, an array or object
/// with strings jumped over, or a scalar up to its delimiter).
pub fn value_end(json: &[u8], at: usize) -> Option<usize> {
    match *json.get(at)? {
        b'"' => string_end(json, at),
        b'[' | b'{' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < json.len() {
                match json[i] {
                    b'"' => {
                        i = string_end(json, i)?;
                        continue;
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let rest = &json[at..];
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                .unwrap_or(rest.len());
            Some(at + len)
        }
    }
}

/// The byte ranges of the elements of the array `json` (which starts with `[`, after
/// any space); `None` if `json` is not an array.
pub fn array_elements(json: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    walk_array(json, 0, |at| {
        let end = value_end(json, at)?;
        out.push((at, end));
        Some(end)
    })?;
    Some(out)
}

/// A member of an object: its key's text and its value's byte range.
pub type Member = (String, (usize, usize));

/// The members of the object starting at `at`: each key's text and its value's range.
pub fn object_members(json: &[u8], at: usize) -> Option<Vec<Member>> {
    let mut out = Vec::new();
    walk_object(json, at, |key, value| {
        let end = value_end(json, value)?;
        out.push((key.to_owned(), (value, end)));
        Some(end)
    })?;
    Some(out)
}

/// Walks the object starting at `at` (after any space): for each member, `on(key,
/// value start)` either walks the value itself and gives its end, or gives `None` and
/// the value is jumped over. Gives where the object ends. Each byte is read once.
pub fn walk_object(
    json: &[u8],
    at: usize,
    mut on: impl FnMut(&str, usize) -> Option<usize>,
) -> Option<usize> {
    let mut at = skip_space(json, at);
    if json.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(json, at + 1);
    if json.get(at) == Some(&b'}') {
        return Some(at + 1);
    }
    loop {
        let key_end = string_end(json, at)?;
        let key = text(&json[at..key_end])?;
        at = skip_space(json, key_end);
        if json.get(at) != Some(&b':') {
            return None;
        }
        at = skip_space(json, at + 1);
        let end = match on(&key, at) {
            Some(end) => end,
            None => value_end(json, at)?,
        };
        at = skip_space(json, end);
        match json.get(at)? {
            b',' => at = skip_space(json, at + 1),
            b'}' => return Some(at + 1),
            _ => return None,
        }
    }
}

/// Walks the array starting at `at`: `on(element start)` walks each element and gives
/// its end. Gives where the array ends, or `None` if `at` holds no array.
pub fn walk_array(
    json: &[u8],
    at: usize,
    mut on: impl FnMut(usize) -> Option<usize>,
) -> Option<usize> {
    let mut at = skip_space(json, at);
    if json.get(at) != Some(&b'[') {
        return None;
    }
    at = skip_space(json, at + 1);
    if json.get(at) == Some(&b']') {
        return Some(at + 1);
    }
    loop {
        let end = on(at)?;
        at = skip_space(json, end);
        match json.get(at)? {
            b',' => at = skip_space(json, at + 1),
            b']' => return Some(at + 1),
            _ => return None,
        }
    }
}

/// The byte ranges (quotes included) of every string value in `json`, object keys
/// left out.
pub fn string_values(json: &[u8], out: &mut Vec<(usize, usize)>) {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'"', &json[at..]) {
        let start = at + i;
        let Some(end) = string_end(json, start) else {
            return;
        };
        let next = skip_space(json, end);
        if json.get(next) != Some(&b':') {
            out.push((start, end));
        }
        at = end;
    }
}

/// The text of a JSON string token (quotes included).
pub fn text(token: &[u8]) -> Option<Cow<'_, str>> {
    let inner = token.get(1..token.len().checked_sub(1)?)?;
    if memchr::memchr(b'\\', inner).is_none() {
        return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
    }
    serde_json::from_slice::<String>(token).ok().map(Cow::Owned)
}

/// Where offsets of a string token's text are in the token: `at` (sorted) holds text
/// offsets and gets token offsets. An offset inside what one escape decodes to moves to
/// the escape's start (`is_end` false) or end (true). Escapes are read as the parser
/// reads them (`\uD83D\uDE00` is one character of four bytes), so a text span and its
/// token span hold the same characters.
pub fn token_offsets(token: &[u8], at: &mut [(usize, bool)]) {
    // Token and text positions walked together, a run of plain bytes at a time.
    let (mut raw, mut text) = (1usize, 0usize);
    let end = token.len().saturating_sub(1);
    for (want, is_end) in at.iter_mut() {
        loop {
            if text >= *want || raw >= end {
                *want = raw.min(end);
                break;
            }
            if token[raw] != b'\\' {
                let run = memchr::memchr(b'\\', &token[raw..end]).unwrap_or(end - raw);
                let step = run.min(*want - text);
                raw += step;
                text += step;
                continue;
            }
            let (raw_len, text_len) = escape_len(&token[raw..end]);
            if text + text_len > *want && !*is_end {
                *want = raw;
                break;
            }
            raw += raw_len;
            text += text_len;
        }
    }
}

/// How many token bytes the escape at the start of `raw` takes, and how many text
/// bytes it stands for.
fn escape_len(raw: &[u8]) -> (usize, usize) {
    let hex = |s: &[u8]| {
        std::str::from_utf8(s.get(..4)?)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    if raw.get(1) != Some(&b'u') {
        return (2, 1);
    }
    match hex(&raw[2..]) {
        Some(0xD800..=0xDBFF)
            if raw.get(6..8) == Some(b"\\u") && matches!(hex(&raw[8..]), Some(0xDC00..=0xDFFF)) =>
        {
            (12, 4)
        }
        Some(c) => (6, char::from_u32(c).map_or(3, char::len_utf8)),
        None => (2, 1),
    }
}

/// `body` with each range (sorted, not overlapping) replaced by its bytes.
pub fn splice(body: &[u8], edits: &[(usize, usize, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for (start, end, with) in edits {
        out.extend_from_slice(&body[at..*start]);
        out.extend_from_slice(with);
        at = *end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

/// A string as a JSON string token.
pub fn quote(text: &str) -> Vec<u8> {
    serde_json::to_vec(text).unwrap_or_else(|_| b"\"\"".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_split_into_elements_whatever_their_strings_hold() {
        let json = br#" [ "a,]" , {"x": [1, "]"]}, 3 ,[ ] ] "#;
        let elements = array_elements(json).expect("an array");
        let texts: Vec<&[u8]> = elements.iter().map(|(s, e)| &json[*s..*e]).collect();
        assert_eq!(
            texts,
            [&br#""a,]""#[..], br#"{"x": [1, "]"]}"#, b"3", b"[ ]"]
        );
        assert_eq!(array_elements(b"[]"), Some(vec![]));
        assert_eq!(array_elements(br#""text""#), None);
    }

    #[test]
    fn object_members_decode_their_keys() {
        let json = br#" {"a" : 1, "m\u0065ssages":[1,{"x":"}"}] ,"n":null} "#;
        let members = object_members(json, 0).expect("an object");
        let got: Vec<(String, &[u8])> = members
            .iter()
            .map(|(k, (s, e))| (k.to_string(), &json[*s..*e]))
            .collect();
        assert_eq!(
            got,
            [
                ("a".to_owned(), &b"1"[..]),
                ("messages".to_owned(), br#"[1,{"x":"}"}]"#),
                ("n".to_owned(), b"null"),
            ]
        );
    }

    #[test]
    fn strings_end_at_their_first_unescaped_quote() {
        for (json, end) in [
            (&br#""abc" x"#[..], 5),
            (br#""a\"b" x"#, 6),
            (br#""a\\" x"#, 5),
            (br#""a\\\"b" x"#, 8),
            (br#""\\\\""#, 6),
        ] {
            assert_eq!(
                string_end(json, 0),
                Some(end),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        assert_eq!(string_end(br#""never closed\""#, 0), None);
    }

    #[test]
    fn string_values_leave_keys_out_and_decode() {
        let json = br#"{"type":"text","text":"a\"b\nc","n":{"k" : "v"}}"#;
        let mut spans = Vec::new();
        string_values(json, &mut spans);
        let texts: Vec<String> = spans
            .iter()
            .map(|(s, e)| text(&json[*s..*e]).expect("decodes").into_owned())
            .collect();
        assert_eq!(texts, ["text", "a\"b\nc", "v"]);
    }

    #[test]
    fn replacing_keeps_the_rest_byte_for_byte() {
        let body = br#"{"a":"x1y","b":2}"#;
        let edits = [(5, 10, quote("[R]\n"))];
        assert_eq!(splice(body, &edits), br#"{"a":"[R]\n","b":2}"#.to_vec());
    }

    #[test]
    fn text_offsets_land_on_the_same_characters_in_the_token() {
        let token = br#""a\n\u00e9\uD83D\uDE00b\"c""#;
        let text = text(token).expect("decodes");
        // Every character boundary of the text maps to the token bytes that hold it.
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|i| text.is_char_boundary(*i))
            .collect();
        for pair in bounds.windows(2) {
            let mut at = [(pair[0], false), (pair[1], true)];
            token_offsets(token, &mut at);
            let piece = format!(
                "\"{}\"",
                std::str::from_utf8(&token[at[0].0..at[1].0]).expect("utf-8")
            );
            assert_eq!(
                serde_json::from_str::<String>(&piece).expect("one escape or more"),
                text[pair[0]..pair[1]]
            );
        }
        // Inside a character's escape: its start for a start, its end for an end.
        let mut at = [(3, false), (3, true)];
        token_offsets(token, &mut at);
        assert_eq!((at[0].0, at[1].0), (4, 10));
    }
}
