//! Property tests of the parsers the request path runs on bytes from outside: the request
//! head, the SSE parser, both translations (requests, responses and streams), the
//! guardrails' walk over a body and the admin body validation. Each holds for any input: no panic, and what the parser
//! promises (a chunked SSE stream parses as the whole one; a head parsed names a model).
//! `PROPTEST_CASES` sets how many inputs each tries (256 by default here; the test
//! command keeps it; `scripts/fuzz.sh` runs many more).

use crate::gateway::proxy::head;
use crate::gateway::sse::SseParser;
use crate::gateway::translate::{
    anthropic_to_openai_request, anthropic_to_openai_response, openai_to_anthropic_request,
    openai_to_anthropic_response, AnthropicToOpenAiStream, OpenAiToAnthropicStream,
};
use crate::http::error::Dialect;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Field names the parsers and translators look at, so that generated JSON reaches their
/// paths rather than only their "unknown field" branches.
const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "system",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "stream_options",
    "include_usage",
    "tools",
    "tool_choice",
    "tool_use",
    "tool_result",
    "tool_use_id",
    "tool_calls",
    "cache_control",
    "function",
    "arguments",
    "name",
    "input",
    "id",
    "index",
    "delta",
    "choices",
    "finish_reason",
    "usage",
    "thinking",
    "budget_tokens",
    "image",
    "source",
    "n",
    "stop",
    "temperature",
    "message",
    "partial_json",
    "input_tokens",
    "output_tokens",
    "prompt_tokens",
    "completion_tokens",
    "stop_reason",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z_ -]{0,12}".prop_map(Value::String),
        prop::sample::select(KEYS).prop_map(|k| Value::String(k.to_owned())),
        prop::sample::select(
            &[
                "user",
                "assistant",
                "system",
                "tool",
                "text",
                "tool_use",
                "tool_result",
                "image",
                "function",
                "enabled",
                "auto",
                "any"
            ][..]
        )
        .prop_map(|k| Value::String(k.to_owned())),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<String, Value>>(),
                )
            }),
        ]
    })
}

/// An object with the request fields, each maybe present, any shape.
fn request_like() -> impl Strategy<Value = Value> {
    prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..10).prop_map(|pairs| {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    })
}

/// The content blocks of a body as serde reads them: `system` and each message's
/// `content` and `tool_calls`, an array being one block per element.
fn serde_blocks(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |v: &Value| match v {
        Value::Array(items) => out.extend(items.iter().map(Value::to_string)),
        other => out.push(other.to_string()),
    };
    if let Some(system) = body.get("system") {
        add(system);
    }
    for m in body["messages"].as_array().into_iter().flatten() {
        for key in ["content", "tool_calls"] {
            if let Some(v) = m.get(key) {
                add(v);
            }
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn guardrails_find_the_blocks_serde_reads(body in request_like()) {
        // Compact: each block's bytes are serde's own text of it.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut found: Vec<String> = crate::gateway::guard::input::blocks(&bytes)
            .iter()
            .map(|(s, e, _)| String::from_utf8_lossy(&bytes[*s..*e]).into_owned())
            .collect();
        found.sort();
        prop_assert_eq!(found, serde_blocks(&body));
        // With white space everywhere: as many blocks, each a whole JSON value.
        let pretty = serde_json::to_vec_pretty(&body).unwrap_or_default();
        let blocks = crate::gateway::guard::input::blocks(&pretty);
        prop_assert_eq!(blocks.len(), serde_blocks(&body).len());
        for (s, e, marked) in blocks {
            let block = serde_json::from_slice::<Value>(&pretty[s..e]);
            prop_assert!(block.is_ok());
            // Marked when it has a `cache_control` member of its own.
            let has = block.ok().and_then(|b| b.get("cache_control").cloned()).is_some();
            prop_assert_eq!(marked, has);
        }
    }

    #[test]
    fn guardrails_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for (s, e, _) in crate::gateway::guard::input::blocks(&bytes) {
            prop_assert!(s <= e && e <= bytes.len());
        }
    }

    #[test]
    fn the_request_head_parser_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for dialect in [Dialect::Anthropic, Dialect::OpenAi] {
            let _ = head::parse(&bytes, dialect, false);
            let _ = head::parse(&bytes, dialect, true);
        }
    }

    #[test]
    fn a_parsed_request_head_names_its_model(body in request_like()) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        for dialect in [Dialect::Anthropic, Dialect::OpenAi] {
            if let Ok(h) = head::parse(&bytes, dialect, false) {
                prop_assert!(!h.model.trim().is_empty());
                prop_assert_eq!(Some(h.model.as_str()), body["model"].as_str());
            }
        }
    }

    #[test]
    fn sse_chunked_anywhere_parses_as_the_whole(
        text in prop::collection::vec(prop_oneof![
            Just("event: message_delta\n".to_owned()),
            Just("data: {\"a\":1}\n".to_owned()),
            Just("data: [DONE]\n".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just(": comment\n".to_owned()),
            "[ -~]{0,20}",
        ], 0..40),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let bytes = text.concat().into_bytes();
        let mut whole = SseParser::new();
        let mut expected = whole.push(&bytes);
        expected.extend(whole.finish());
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut chunked = SseParser::new();
        let mut got = Vec::new();
        let mut from = 0;
        for to in at.into_iter().chain([bytes.len()]) {
            got.extend(chunked.push(&bytes[from..to]));
            from = to;
        }
        got.extend(chunked.finish());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn the_depth_check_takes_any_bytes_and_passes_any_shallow_json(
        bytes in prop::collection::vec(prop_oneof![Just(b'['), Just(b'{'), Just(b'"'), Just(b'\\'), Just(b']'), any::<u8>()], 0..512),
        value in json_value(),
    ) {
        let _ = head::too_deep(&bytes);
        let json = serde_json::to_vec(&value).unwrap_or_default();
        prop_assert_eq!(head::too_deep(&json), None);
    }

    #[test]
    fn the_sse_parser_takes_any_bytes(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..256), 0..8)) {
        let mut p = SseParser::new();
        for c in &chunks {
            let _ = p.push(c);
        }
        let _ = p.finish();
    }

    #[test]
    fn request_and_response_translations_take_any_json(value in request_like()) {
        let _ = anthropic_to_openai_request(&value, "m");
        let _ = openai_to_anthropic_request(&value, "m");
        let _ = anthropic_to_openai_response(&value, "m");
        let _ = openai_to_anthropic_response(&value, "m");
    }

    #[test]
    fn stream_translations_take_any_events(
        events in prop::collection::vec((prop::option::of(prop::sample::select(&[
            "message_start", "content_block_start", "content_block_delta", "content_block_stop",
            "message_delta", "message_stop", "ping", "error",
        ][..])), prop_oneof![json_value().prop_map(|v| v.to_string()), "[ -~]{0,30}", Just("[DONE]".to_owned())]), 0..16),
        cut in any::<bool>(),
    ) {
        let mut to_openai = AnthropicToOpenAiStream::new("m", "chatcmpl-1", 0, true);
        let mut to_anthropic = OpenAiToAnthropicStream::new("m", "msg_1");
        for (name, data) in &events {
            let _ = to_openai.push(*name, data);
            let _ = to_anthropic.push(data);
        }
        if cut {
            let _ = to_openai.cut();
            let _ = to_anthropic.cut();
        }
        let _ = to_openai.finish();
        let _ = to_anthropic.finish();
    }

    #[test]
    fn admin_bodies_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256), body in request_like()) {
        use crate::http::admin::dto::{CreateBudget, CreateKey, CreateRateLimit, NameBody, PatchKey};
        use crate::http::admin::validate::parse_body;
        for b in [bytes::Bytes::from(bytes), bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default())] {
            let _ = parse_body::<NameBody>(&b);
            let _ = parse_body::<CreateKey>(&b);
            let _ = parse_body::<PatchKey>(&b);
            let _ = parse_body::<CreateBudget>(&b);
            let _ = parse_body::<CreateRateLimit>(&b);
        }
    }
}
