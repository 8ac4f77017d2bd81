//! Unit tests of `mock`.

use super::*;
use crate::gateway::sse::{SseEvent, SseParser};

fn reply(text: &str, input_tokens: u64, output_tokens: u64) -> MockReply {
    MockReply {
        text: text.to_owned(),
        input_tokens,
        output_tokens,
        capped: false,
    }
}

/// A reply stopped at its `max_tokens`.
fn capped(text: &str, input_tokens: u64, output_tokens: u64) -> MockReply {
    MockReply {
        capped: true,
        ..reply(text, input_tokens, output_tokens)
    }
}

fn parse_json(bytes: &[u8]) -> Value {
    match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(err) => panic!("invalid JSON {:?}: {err}", String::from_utf8_lossy(bytes)),
    }
}

/// Parses a list of stream pieces back into events with the crate's own SSE parser.
fn parse_stream(pieces: &[Bytes]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for piece in pieces {
        let parsed = parser.push(piece);
        assert_eq!(
            parsed.len(),
            1,
            "each piece is exactly one event: {piece:?}"
        );
        events.extend(parsed);
    }
    assert_eq!(parser.finish(), None, "stream ends on an event boundary");
    events
}

#[test]
fn anthropic_replies() {
    // Default reply: 38 bytes -> 10 tokens.
    let cases = [
        (
            "plain string",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            reply(DEFAULT_REPLY, 1, 10),
        ),
        (
            "echo in blocks, system counted",
            json!({"system": "abcd", "messages": [{"role": "user", "content": [{"type": "text", "text": "say ECHO:banana now"}]}]}),
            reply("banana", 6, 2),
        ),
        (
            "system as blocks",
            json!({"system": [{"type": "text", "text": "12345678"}], "messages": [{"role": "user", "content": "x"}]}),
            reply(DEFAULT_REPLY, 3, 10),
        ),
        (
            "only the last user message echoes",
            json!({"messages": [
                {"role": "user", "content": "ECHO:old"},
                {"role": "assistant", "content": "ECHO:assistant"},
                {"role": "user", "content": "no marker"},
            ]}),
            reply(DEFAULT_REPLY, 8, 10),
        ),
        (
            "last user message may precede an assistant reply",
            json!({"messages": [
                {"role": "user", "content": "ECHO:first"},
                {"role": "assistant", "content": "ok"},
            ]}),
            reply("first", 3, 2),
        ),
        (
            "echo word stops at newline",
            json!({"messages": [{"role": "user", "content": "ECHO:x\ny"}]}),
            reply("x", 2, 1),
        ),
        (
            "empty echo word falls through to next marker",
            json!({"messages": [{"role": "user", "content": "ECHO: ECHO:y"}]}),
            reply("y", 3, 1),
        ),
        (
            "echo in second block",
            json!({"messages": [{"role": "user", "content": [
                {"type": "image", "source": {}},
                {"type": "text", "text": "ECHO:\u{e9}t\u{e9}"},
            ]}]}),
            reply("\u{e9}t\u{e9}", 3, 2),
        ),
        (
            "tool_result text counted",
            json!({"messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "12345678"}]},
                {"type": "tool_result", "tool_use_id": "t", "content": "1234"},
            ]}]}),
            reply(DEFAULT_REPLY, 3, 10),
        ),
        (
            "max_tokens caps output",
            json!({"max_tokens": 3, "messages": []}),
            capped(DEFAULT_REPLY, 1, 3),
        ),
        (
            "max_tokens above output",
            json!({"max_tokens": 300, "messages": []}),
            reply(DEFAULT_REPLY, 1, 10),
        ),
        ("not an object", json!(null), reply(DEFAULT_REPLY, 1, 10)),
    ];
    for (name, req, expected) in cases {
        assert_eq!(reply_for_anthropic(&req), expected, "{name}");
        let counted = parse_json(&count_tokens_json(&req));
        assert_eq!(
            counted,
            json!({"input_tokens": expected.input_tokens}),
            "{name}"
        );
    }
}

#[test]
fn openai_replies() {
    let cases = [
        (
            "system in messages, string content",
            json!({"messages": [{"role": "system", "content": "abcd"}, {"role": "user", "content": "ECHO:hey"}]}),
            reply("hey", 3, 1),
        ),
        (
            "content parts",
            json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "http://x"}},
                {"type": "text", "text": "go ECHO:parts"},
            ]}]}),
            reply("parts", 4, 2),
        ),
        (
            "max_tokens",
            json!({"max_tokens": 2, "messages": []}),
            capped(DEFAULT_REPLY, 1, 2),
        ),
        (
            "max_completion_tokens",
            json!({"max_completion_tokens": 4, "messages": []}),
            capped(DEFAULT_REPLY, 1, 4),
        ),
        (
            "max_completion_tokens wins",
            json!({"max_tokens": 1, "max_completion_tokens": 5, "messages": []}),
            capped(DEFAULT_REPLY, 1, 5),
        ),
        (
            "null content",
            json!({"messages": [{"role": "assistant", "content": null}]}),
            reply(DEFAULT_REPLY, 1, 10),
        ),
    ];
    for (name, req, expected) in cases {
        assert_eq!(reply_for_openai(&req), expected, "{name}");
    }
}

#[test]
fn long_replies_have_the_tokens_asked_within_max_tokens() {
    let ask = |text: &str, max: Option<u64>| {
        let mut req = json!({"messages": [{"role": "user", "content": text}]});
        if let Some(max) = max {
            req["max_tokens"] = json!(max);
        }
        reply_for_anthropic(&req)
    };
    let r = ask("write LONG:1500 please", Some(128_000));
    assert_eq!((r.text.len(), r.output_tokens), (6_000, 1_500));
    assert!(r.text.starts_with("The quick brown fox"));
    // A cap cuts the text too, as a model stopped at its cap.
    assert!(!r.capped);
    let r = ask("LONG:1500", Some(100));
    assert_eq!((r.text.len(), r.output_tokens, r.capped), (400, 100, true));
    let stream = anthropic_sse_events("m", &r, 1);
    let delta = String::from_utf8_lossy(&stream[stream.len() - 2]).into_owned();
    assert!(delta.contains("\"stop_reason\":\"max_tokens\""), "{delta}");
    let chunks = openai_sse_chunks("m", &r, 1, 0, false);
    let finish = String::from_utf8_lossy(&chunks[chunks.len() - 2]).into_owned();
    assert!(finish.contains("\"finish_reason\":\"length\""), "{finish}");
    // Bounded, and garbage after the marker is an ordinary request.
    assert_eq!(ask("LONG:999999999", None).output_tokens, 32_768);
    assert_eq!(ask("LONG:many", None).text, DEFAULT_REPLY);
    // The OpenAI route honours it too.
    let r = reply_for_openai(
        &json!({"messages": [{"role": "user", "content": "LONG:60"}], "max_completion_tokens": 50}),
    );
    assert_eq!(r.output_tokens, 50);
}

#[test]
fn text_pieces_respect_limit_and_char_boundaries() {
    let cases: [(&str, &[&str]); 6] = [
        ("", &[]),
        ("short", &["short"]),
        ("exactly sixteen!", &["exactly sixteen!"]),
        ("exactly sixteen!+", &["exactly sixteen!", "+"]),
        // Nine two-byte chars: the 17th byte would split the ninth, so it moves on.
        (
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
            &["\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}", "\u{e9}"],
        ),
        (
            "abc\u{1f600}\u{1f600}\u{1f600}\u{1f600}",
            &["abc\u{1f600}\u{1f600}\u{1f600}", "\u{1f600}"],
        ),
    ];
    for (text, expected) in cases {
        let pieces: Vec<&str> = text_pieces(text).collect();
        assert_eq!(pieces, expected, "{text:?}");
    }
}

#[test]
fn anthropic_json_shape() {
    let r = reply("say \"hi\"\n", 7, 3);
    let body = parse_json(&anthropic_json("claude-\"x\"", &r, 42));
    let expected = json!({
        "id": "msg_mock_42",
        "type": "message",
        "role": "assistant",
        "model": "claude-\"x\"",
        "content": [{"type": "text", "text": "say \"hi\"\n"}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 7, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    });
    assert_eq!(body, expected);
}

#[test]
fn anthropic_stream_parses_back() {
    let texts = [
        DEFAULT_REPLY,
        "x",
        "quote \" back\\slash\nnew line \u{1f600}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
    ];
    for text in texts {
        let r = reply(text, 11, 5);
        let pieces = anthropic_sse_events("m\"odel", &r, 9);
        let events = parse_stream(&pieces);
        let names: Vec<&str> = events
            .iter()
            .map(|e| e.event.as_deref().unwrap_or(""))
            .collect();
        let mut expected = vec!["message_start", "content_block_start", "ping"];
        expected.extend(text_pieces(text).map(|_| "content_block_delta"));
        expected.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(names, expected, "{text}");

        let data: Vec<Value> = events
            .iter()
            .map(|e| parse_json(e.data.as_bytes()))
            .collect();
        for (name, value) in names.iter().zip(&data) {
            assert_eq!(value["type"], *name, "data type matches event name");
        }
        let message = &data[0]["message"];
        assert_eq!(message["id"], "msg_mock_9");
        assert_eq!(message["model"], "m\"odel");
        assert_eq!(message["usage"]["input_tokens"], 11);
        assert_eq!(message["usage"]["output_tokens"], 1);
        assert_eq!(
            data[1]["content_block"],
            json!({"type": "text", "text": ""})
        );
        let joined: String = data
            .iter()
            .filter(|d| d["type"] == "content_block_delta")
            .map(|d| {
                assert_eq!(d["delta"]["type"], "text_delta");
                d["delta"]["text"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        assert_eq!(joined, text);
        let delta = &data[data.len() - 2];
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(delta["usage"]["output_tokens"], 5);
    }
}

#[test]
fn openai_json_shape() {
    let body = parse_json(&openai_json(
        "gpt-\"4\"",
        &reply("a\"b", 4, 2),
        3,
        1_700_000_000,
    ));
    let expected = json!({
        "id": "chatcmpl-mock-3",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": "gpt-\"4\"",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "a\"b"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    });
    assert_eq!(body, expected);
}

#[test]
fn openai_stream_chunks() {
    let text = "0123456789abcdef\u{e9}\"tail";
    for include_usage in [false, true] {
        let chunks = openai_sse_chunks("gpt\"x", &reply(text, 8, 6), 5, 123, include_usage);
        let events = parse_stream(&chunks);
        assert!(events.iter().all(|e| e.event.is_none()));
        assert_eq!(events.last().map(|e| e.data.as_str()), Some("[DONE]"));
        let data: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| parse_json(e.data.as_bytes()))
            .collect();
        for chunk in &data {
            assert_eq!(chunk["id"], "chatcmpl-mock-5");
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["created"], 123);
            assert_eq!(chunk["model"], "gpt\"x");
        }
        // Role chunk, 2 content chunks, finish chunk, then optionally the usage chunk.
        let expected_len = if include_usage { 5 } else { 4 };
        assert_eq!(data.len(), expected_len, "include_usage={include_usage}");
        assert_eq!(
            data[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let content: String = data[1..3]
            .iter()
            .map(|c| {
                assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(content, text);
        assert_eq!(data[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(data[3]["choices"][0]["delta"], json!({}));
        for chunk in &data[..4] {
            let usage = chunk.as_object().and_then(|c| c.get("usage"));
            assert_eq!(
                usage,
                include_usage.then_some(&Value::Null),
                "usage:null only when requested"
            );
        }
        if include_usage {
            assert_eq!(data[4]["choices"], json!([]));
            assert_eq!(
                data[4]["usage"],
                json!({"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14})
            );
        }
    }
}
