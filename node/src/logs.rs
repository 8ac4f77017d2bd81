//! The process's log lines, one per event whatever the events carry: a model name, a
//! header or a provider's error text may hold a newline that would otherwise start a
//! forged line (`WARN tollgate_node::auth: admin token accepted from …`). Each event is
//! written as one line with the control characters inside it escaped (`\n`, `\r`,
//! `\x1b`, …; and the Unicode line breaks U+0085, U+2028, U+2029), in every field and
//! in the message alike.

use std::io::{self, Write};
use tracing_subscriber::fmt::MakeWriter;

/// Writes each formatted event with the control characters inside it escaped. `ansi`:
/// the events carry the formatter's colour codes (a terminal), so ESC is kept.
pub struct OneLine<M> {
    inner: M,
    ansi: bool,
}

impl<M> OneLine<M> {
    pub fn new(inner: M, ansi: bool) -> Self {
        OneLine { inner, ansi }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = Escaping<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping {
            inner: self.inner.make_writer(),
            ansi: self.ansi,
        }
    }
}

/// One writer per event (the formatter writes an event whole, ending with `\n`).
pub struct Escaping<W> {
    inner: W,
    ansi: bool,
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        match escape(body, self.ansi) {
            Some(escaped) => {
                self.inner.write_all(escaped.as_bytes())?;
                self.inner.write_all(end)
            }
            None => self.inner.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `text` with its control characters escaped, or `None` when it has none (the common
/// case: nothing is copied). Bytes that are not UTF-8 are shown as `\xNN`.
pub fn escape(text: &[u8], keep_esc: bool) -> Option<String> {
    let needs = |c: char| {
        (c.is_control() && c != '\t' && !(keep_esc && c == '\x1b'))
            || matches!(c, '\u{2028}' | '\u{2029}')
    };
    let lossless = std::str::from_utf8(text);
    if let Ok(s) = lossless {
        if !s.chars().any(needs) {
            return None;
        }
    }
    let mut out = String::with_capacity(text.len() + 16);
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if needs(c) => {
                    use std::fmt::Write as _;
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            use std::fmt::Write as _;
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_inside_its_event() {
        let event = b"INFO tollgate_node::gateway: model refused model=x\nWARN tollgate_node::auth: admin token accepted from 6.6.6.6\n";
        let mut out = Vec::new();
        Escaping {
            inner: &mut out,
            ansi: false,
        }
        .write_all(event)
        .expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("model=x\\nWARN"), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_not_copied() {
        assert_eq!(escape(b"plain text\twith a tab", false), None);
        assert_eq!(
            escape("a\rb\x1b[31mc\u{7f}d\u{2028}e\u{85}".as_bytes(), false).as_deref(),
            Some("a\\rb\\u{1b}[31mc\\u{7f}d\\u{2028}e\\u{85}")
        );
        // A terminal keeps the formatter's colours.
        assert_eq!(escape(b"\x1b[2mtime\x1b[0m", true), None);
        assert_eq!(
            escape(b"ok \xff\xfe", false).as_deref(),
            Some("ok \\xff\\xfe")
        );
    }
}
