//! Byte-level walks over JSON the parser has already validated: the elements of an
//! array, the string values of a value (object keys skipped), a string's text, and a
//! body rebuilt with some strings replaced. Strings are jumped over with `memchr`, so a
//! walk costs little more than reading the bytes once.

use std::borrow::Cow;

/// Where the string starting at `at` (its opening quote) ends: just past its closing
/// quote.
fn string_end(json: &[u8], at: usize) -> Option<usize> {
    let mut from = at + 1;
    loop {
        let rest = json.get(from..)?;
        match memchr::memchr2(b'"', b'\\', rest) {
            Some(i) if json[from + i] == b'\\' => from += i + 2,
            Some(i) => return Some(from + i + 1),
            None => return None,
        }
    }
}

fn skip_space(json: &[u8], mut at: usize) -> usize {
    while at < json.len() && matches!(json[at], b' ' | b'\n' | b'\r' | b'\t') {
        at += 1;
    }
    at
}

/// The byte ranges of the elements of the array `json` (which starts with `[`); `None`
/// if `json` is not an array.
pub fn array_elements(json: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut at = skip_space(json, 0);
    if json.get(at) != Some(&b'[') {
        return None;
    }
    at += 1;
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start: Option<usize> = None;
    while at < json.len() {
        match json[at] {
            b'"' => {
                start.get_or_insert(at);
                at = string_end(json, at)?;
                continue;
            }
            b'[' | b'{' => {
                start.get_or_insert(at);
                depth += 1;
            }
            b']' | b'}' if depth > 0 => depth -= 1,
            b']' => {
                if let Some(s) = start.take() {
                    out.push((s, trim_end(json, s, at)));
                }
                return Some(out);
            }
            b',' if depth == 0 => {
                if let Some(s) = start.take() {
                    out.push((s, trim_end(json, s, at)));
                }
            }
            b' ' | b'\n' | b'\r' | b'\t' => {}
            _ => {
                start.get_or_insert(at);
            }
        }
        at += 1;
    }
    None
}

fn trim_end(json: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && matches!(json[end - 1], b' ' | b'\n' | b'\r' | b'\t') {
        end -= 1;
    }
    end
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
