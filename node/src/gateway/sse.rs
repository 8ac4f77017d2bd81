//! Incremental Server-Sent-Events parser that lets the streaming proxy observe upstream events (for example to read token usage) while the raw bytes are relayed unchanged.
//!
//! The parser never owns the stream: complete lines are parsed straight out of the chunk the
//! caller passes in, and only a trailing partial line is copied into an internal buffer until the
//! rest of it arrives. Field values are accumulated per event and turned into an [`SseEvent`]
//! when the blank line that terminates the event is seen.

/// Upper bound, in bytes, for a single pending line and for a single event's accumulated fields.
///
/// The parser has to buffer a line until its terminator arrives and an event until its blank line
/// arrives, so a misbehaving or malicious upstream that never sends either would otherwise make
/// the gateway buffer without limit. 16 MiB is far larger than any legitimate LLM streaming event
/// (those are a few hundred bytes to a few KiB) while still bounding memory per stream. Anything
/// larger is dropped; the raw bytes are still relayed to the client, only the observation is lost.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One complete SSE event. `event` is the `event:` field (None when absent); `data` joins multiple data lines with '\n'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser; feed it chunks with [`SseParser::push`] and call
/// [`SseParser::finish`] once the upstream ends.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line whose terminator has not arrived yet.
    line: Vec<u8>,
    /// The previous chunk ended with '\r', so a '\n' at the start of the next chunk belongs to
    /// that CRLF terminator and must not be read as an extra (blank) line.
    pending_cr: bool,
    /// The current line exceeded [`MAX_EVENT_BYTES`]; its remaining bytes are skipped up to the
    /// next line terminator instead of being buffered.
    discarding_line: bool,
    /// The current event lost a line or grew past [`MAX_EVENT_BYTES`]; its fields are ignored and
    /// it is not dispatched, because a partial event would be misleading to observers.
    discarding_event: bool,
    /// Value of the last `event:` field of the current event.
    event: Option<String>,
    /// Data lines of the current event joined with '\n'; kept as bytes so that UTF-8 validation
    /// happens once per event rather than once per line.
    data: Vec<u8>,
    /// Whether the current event has at least one data line (the data itself may be empty).
    has_data: bool,
}

/// One event as SSE bytes, appended to `out`: its name, if it has one, and its data (a
/// `data:` field per line).
pub fn frame(event: Option<&str>, data: &str, out: &mut Vec<u8>) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

impl SseParser {
    /// Creates a parser for a new stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next chunk of bytes (chunks split anywhere: mid-line, mid-UTF-8, between \r and \n) and get the events completed by it.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.pending_cr && !rest.is_empty() {
            self.pending_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while !rest.is_empty() {
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.buffer_partial_line(rest);
                break;
            };
            let line = &rest[..end];
            let mut next = end + 1;
            if rest[end] == b'\r' {
                match rest.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // The '\n' of a CRLF may arrive with the next chunk; remember to skip it.
                    None => self.pending_cr = true,
                }
            }
            rest = &rest[next..];
            self.end_of_line(line, &mut out);
        }
        out
    }

    /// Upstream ended: return the last event if it was complete except for its blank line terminator (some servers omit it).
    ///
    /// A final line that lacks even its own line terminator is also accepted, since servers that
    /// omit the blank line often omit the last newline too; if the connection was instead cut
    /// mid-line, the truncated data is typically invalid JSON, which observers already reject.
    /// The parser is reset afterwards and can be reused for a new stream.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.discarding_line && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut out);
        }
        self.dispatch(&mut out);
        *self = Self::default();
        out.pop()
    }

    /// Handles a line terminator: `line` is the part of the line found in the current chunk, to
    /// be joined with any bytes buffered from earlier chunks.
    fn end_of_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if self.discarding_line {
            // The oversized line is complete now; its bytes were dropped and it is not parsed.
            self.discarding_line = false;
            return;
        }
        if self.line.is_empty() {
            // Fast path: the whole line is inside this chunk, so parse it without copying.
            self.process_line(line, out);
            return;
        }
        if self.line.len() + line.len() > MAX_EVENT_BYTES {
            self.drop_line(line);
            self.discarding_line = false;
            return;
        }
        let mut buffered = std::mem::take(&mut self.line);
        buffered.extend_from_slice(line);
        self.process_line(&buffered, out);
        // Reuse the allocation for the next partial line.
        buffered.clear();
        self.line = buffered;
    }

    /// Stores the unterminated tail of a chunk until the rest of the line arrives.
    fn buffer_partial_line(&mut self, partial: &[u8]) {
        if self.discarding_line {
            return;
        }
        if self.line.len() + partial.len() > MAX_EVENT_BYTES {
            self.drop_line(partial);
            return;
        }
        self.line.extend_from_slice(partial);
    }

    /// Drops the pending line because it is too large and starts skipping to its terminator.
    /// `more` is the next piece of the line, needed to tell whether the line is a comment when
    /// nothing was buffered yet.
    fn drop_line(&mut self, more: &[u8]) {
        let first = self.line.first().or(more.first()).copied();
        // An oversized comment carries no event data, so losing it does not corrupt the event.
        if first != Some(b':') {
            self.drop_event();
        }
        // Release the memory rather than keeping a 16 MiB allocation around for small lines.
        self.line = Vec::new();
        self.discarding_line = true;
    }

    /// Marks the current event as lost and frees what it accumulated.
    fn drop_event(&mut self) {
        self.discarding_event = true;
        self.event = None;
        self.data = Vec::new();
        self.has_data = false;
    }

    /// Interprets one complete line (without its terminator).
    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if self.discarding_event || line[0] == b':' {
            return;
        }
        if line.len() > MAX_EVENT_BYTES {
            // The same limit as for buffered lines, so the outcome does not depend on whether the
            // line happened to arrive in one chunk.
            self.drop_event();
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (&line[..colon], value)
            }
            // A line without a colon is a field name with an empty value.
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                let event_len = self.event.as_ref().map_or(0, String::len);
                let separator = usize::from(self.has_data);
                if self.data.len() + separator + value.len() + event_len > MAX_EVENT_BYTES {
                    self.drop_event();
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                if self.data.len() + value.len() > MAX_EVENT_BYTES {
                    self.drop_event();
                    return;
                }
                self.event = Some(String::from_utf8_lossy(value).into_owned());
            }
            // `id`, `retry` and unknown fields carry nothing the gateway needs.
            _ => {}
        }
    }

    /// Ends the current event at a blank line, emitting it when it has data.
    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.discarding_event {
            self.discarding_event = false;
            return;
        }
        let event = self.event.take();
        if !self.has_data {
            return;
        }
        self.has_data = false;
        let data = std::mem::take(&mut self.data);
        let data = match String::from_utf8(data) {
            Ok(data) => data,
            // Invalid UTF-8 from upstream is replaced rather than failing the whole stream.
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        };
        out.push(SseEvent { event, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    /// Feeds `chunks` in order and returns everything emitted, including `finish`.
    fn run(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.push(chunk));
        }
        events.extend(parser.finish());
        events
    }

    /// Checks that `input` yields `expected` whole, byte by byte, and split at every position.
    fn check(name: &str, input: &[u8], expected: &[SseEvent]) {
        assert_eq!(run(&[input]), expected, "{name}: whole input");
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes), expected, "{name}: byte by byte");
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(run(&[a, b]), expected, "{name}: split at {split}");
        }
    }

    const SAMPLE: &[u8] = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\nevent: delta\rdata: h\xc3\xa9llo\rdata:  two\r\rid: 7\nretry: 100\ndata\n\n";

    fn sample_events() -> Vec<SseEvent> {
        vec![
            ev(Some("message_start"), "{\"a\":1}"),
            ev(Some("delta"), "h\u{e9}llo\n two"),
            ev(None, ""),
        ]
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, &[u8], Vec<SseEvent>)> = vec![
            ("lf", b"data: x\n\n", vec![ev(None, "x")]),
            (
                "crlf",
                b"event: e\r\ndata: x\r\n\r\n",
                vec![ev(Some("e"), "x")],
            ),
            ("cr", b"event: e\rdata: x\r\r", vec![ev(Some("e"), "x")]),
            (
                "mixed endings",
                b"data: a\r\ndata: b\rdata: c\n\r\n",
                vec![ev(None, "a\nb\nc")],
            ),
            ("comment", b": hi\ndata: x\n: mid\n\n", vec![ev(None, "x")]),
            ("comment only", b": ping\n\n", vec![]),
            (
                "multi-line data",
                b"data: a\ndata: b\ndata:\n\n",
                vec![ev(None, "a\nb\n")],
            ),
            ("no space", b"data:x\n\n", vec![ev(None, "x")]),
            (
                "one space stripped",
                b"data:  x \n\n",
                vec![ev(None, " x ")],
            ),
            (
                "colon in value",
                b"data: {\"k\":\"v\"}\n\n",
                vec![ev(None, "{\"k\":\"v\"}")],
            ),
            ("bare field", b"data\n\n", vec![ev(None, "")]),
            (
                "no data not dispatched",
                b"event: e\n\ndata: x\n\n",
                vec![ev(None, "x")],
            ),
            (
                "id retry unknown ignored",
                b"id: 1\nretry: 5\nfoo: bar\ndata: x\n\n",
                vec![ev(None, "x")],
            ),
            (
                "last event wins",
                b"event: a\nevent: b\ndata: x\n\n",
                vec![ev(Some("b"), "x")],
            ),
            (
                "missing blank line",
                b"data: a\n\ndata: b\n",
                vec![ev(None, "a"), ev(None, "b")],
            ),
            (
                "missing final newline",
                b"event: e\ndata: b",
                vec![ev(Some("e"), "b")],
            ),
            (
                "utf8",
                "data: \u{1f600}\u{e9}\n\n".as_bytes(),
                vec![ev(None, "\u{1f600}\u{e9}")],
            ),
            (
                "invalid utf8 replaced",
                b"data: \xff\n\n",
                vec![ev(None, "\u{fffd}")],
            ),
            ("empty stream", b"", vec![]),
            ("blank lines only", b"\n\r\n\r\n", vec![]),
        ];
        for (name, input, expected) in &cases {
            check(name, input, expected);
        }
        check("sample", SAMPLE, &sample_events());
    }

    #[test]
    fn every_pair_of_split_points() {
        let expected = sample_events();
        for i in 0..=SAMPLE.len() {
            for j in i..=SAMPLE.len() {
                let chunks = [&SAMPLE[..i], &SAMPLE[i..j], &SAMPLE[j..]];
                assert_eq!(run(&chunks), expected, "splits at {i} and {j}");
            }
        }
    }

    #[test]
    fn events_are_emitted_by_the_chunk_that_completes_them() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(b"data: a\n"), vec![]);
        assert_eq!(parser.push(b"\ndata: b\n"), vec![ev(None, "a")]);
        assert_eq!(parser.finish(), Some(ev(None, "b")));
        // finish resets the parser, so nothing is left over.
        assert_eq!(parser.finish(), None);
        assert_eq!(parser.push(b"data: c\n\n"), vec![ev(None, "c")]);
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn oversize_events_are_dropped() {
        let huge = vec![b'x'; MAX_EVENT_BYTES + 1];
        let half = vec![b'y'; MAX_EVENT_BYTES / 2 + 1];
        let mut one_line = b"event: big\ndata: ".to_vec();
        one_line.extend_from_slice(&huge);
        one_line.extend_from_slice(b"\ndata: more\n\ndata: ok\n\n");
        let mut many_lines = Vec::new();
        for _ in 0..2 {
            many_lines.extend_from_slice(b"data: ");
            many_lines.extend_from_slice(&half);
            many_lines.push(b'\n');
        }
        many_lines.extend_from_slice(b"\ndata: ok\n\n");
        let mut huge_comment = b"data: ok\n:".to_vec();
        huge_comment.extend_from_slice(&huge);
        huge_comment.extend_from_slice(b"\n\n");
        let cases: [(&str, &[u8]); 3] = [
            ("one huge line", &one_line),
            ("many lines", &many_lines),
            ("huge comment keeps event", &huge_comment),
        ];
        for (name, input) in cases {
            for chunk_size in [input.len(), 1 << 20, 4093] {
                let mut parser = SseParser::new();
                let mut events = Vec::new();
                for chunk in input.chunks(chunk_size) {
                    events.extend(parser.push(chunk));
                    assert!(parser.line.len() <= MAX_EVENT_BYTES, "{name}: line bound");
                    assert!(parser.data.len() <= MAX_EVENT_BYTES, "{name}: event bound");
                }
                events.extend(parser.finish());
                assert_eq!(
                    events,
                    vec![ev(None, "ok")],
                    "{name} in {chunk_size} byte chunks"
                );
            }
        }
    }

    #[test]
    fn limits_are_inclusive() {
        // A line of exactly the limit is kept and one byte more is dropped, in any chunking.
        for (line_len, kept) in [(MAX_EVENT_BYTES, true), (MAX_EVENT_BYTES + 1, false)] {
            let mut input = b"data: ".to_vec();
            input.resize(line_len, b'z');
            input.extend_from_slice(b"\n\ndata: ok\n\n");
            for chunk_size in [input.len(), 1 << 20] {
                let events = run(&input.chunks(chunk_size).collect::<Vec<_>>());
                assert_eq!(events.len(), if kept { 2 } else { 1 }, "line of {line_len}");
                assert_eq!(events.last(), Some(&ev(None, "ok")));
            }
        }
        // An event counts its name and its joined data lines, including the '\n' separators.
        let name = "e";
        for (total, kept) in [(MAX_EVENT_BYTES, true), (MAX_EVENT_BYTES + 1, false)] {
            let first = (total - name.len() - 1) / 2;
            let second = total - name.len() - 1 - first;
            let mut input = format!("event: {name}\ndata: ").into_bytes();
            input.resize(input.len() + first, b'a');
            input.extend_from_slice(b"\ndata: ");
            input.resize(input.len() + second, b'b');
            input.extend_from_slice(b"\n\n");
            let events = run(&[&input]);
            assert_eq!(events.len(), usize::from(kept), "event of {total}");
            if let Some(event) = events.first() {
                assert_eq!(event.data.len() + name.len(), total);
            }
        }
    }
}
