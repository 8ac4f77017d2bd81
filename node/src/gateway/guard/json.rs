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

/// `text` with each span (sorted, not overlapping) replaced by its text.
pub fn replace(text: &str, spans: &[(usize, usize, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, with) in spans {
        out.push_str(&text[at..*start]);
        out.push_str(with);
        at = *end;
    }
    out.push_str(&text[at..]);
    out
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
        assert_eq!(replace("abcdef", &[(1, 3, "X".into())]), "aXdef");
    }
}
