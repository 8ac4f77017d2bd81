//! Unit tests of `stream_to_anthropic`.

use super::*;

/// Checks that every event line names the payload's type and returns the payloads.
fn payloads(events: Vec<SseOut>) -> Vec<Value> {
    events
        .into_iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
            assert_eq!(e.event, v["type"].as_str(), "event line must match type");
            v
        })
        .collect()
}

/// Pushes every chunk (JSON values, or "[DONE]" strings), then calls finish().
fn run(chunks: &[Value]) -> Vec<Value> {
    let mut s = OpenAiToAnthropicStream::new("claude-client", "msg_1");
    let mut events = Vec::new();
    for chunk in chunks {
        let data = match chunk {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        events.extend(s.push(&data).unwrap_or_else(|e| panic!("push failed: {e}")));
    }
    events.extend(s.finish());
    assert!(s.finish().is_empty(), "finish must be idempotent");
    assert_eq!(s.push("{}").ok(), Some(vec![]), "nothing after the end");
    payloads(events)
}

fn chunk(delta: Value, finish: Value) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
           "model": "up", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn usage_chunk(prompt: u64, cached: u64, completion: u64) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
           "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                     "total_tokens": prompt + completion,
                     "prompt_tokens_details": {"cached_tokens": cached}}})
}

/// `message_start` as emitted; `input` is non-zero only when the first chunk had usage.
fn message_start_with(input: u64) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-client",
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": 0,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})
}

fn message_start() -> Value {
    message_start_with(0)
}

fn start(index: usize, block: Value) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": block})
}

fn text(index: usize, text: &str) -> Value {
    json!({"type": "content_block_delta", "index": index,
           "delta": {"type": "text_delta", "text": text}})
}

fn args(index: usize, json: &str) -> Value {
    json!({"type": "content_block_delta", "index": index,
           "delta": {"type": "input_json_delta", "partial_json": json}})
}

fn stop(index: usize) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

fn end(reason: &str, input: u64, output: u64, cache_read: u64) -> [Value; 2] {
    [
        json!({"type": "message_delta",
               "delta": {"stop_reason": reason, "stop_sequence": null},
               "usage": {"input_tokens": input, "output_tokens": output,
                         "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": cache_read}}),
        json!({"type": "message_stop"}),
    ]
}

#[test]
fn text_only_with_usage_chunk() {
    let got = run(&[
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hel"}), Value::Null),
        chunk(json!({"content": "lo"}), Value::Null),
        chunk(json!({}), json!("stop")),
        usage_chunk(12, 2, 3),
        json!("[DONE]"),
    ]);
    let mut expected = vec![
        message_start(),
        start(0, json!({"type": "text", "text": ""})),
        text(0, "Hel"),
        text(0, "lo"),
        stop(0),
    ];
    expected.extend(end("end_turn", 10, 3, 2));
    assert_eq!(got, expected);
}

#[test]
fn text_then_two_fragmented_tool_calls() {
    let call = |index: u64, id: Option<&str>, name: Option<&str>, arguments: &str| {
        let mut function = json!({"arguments": arguments});
        if let Some(name) = name {
            function["name"] = json!(name);
        }
        let mut c = json!({"index": index, "function": function});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["type"] = json!("function");
        }
        chunk(json!({"tool_calls": [c]}), Value::Null)
    };
    let got = run(&[
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Checking."}), Value::Null),
        call(0, Some("call_a"), Some("get"), ""),
        call(0, None, None, "{\"ci"),
        call(0, None, None, "ty\":\"Oslo\"}"),
        call(1, Some("call_b"), Some("put"), "{\"x\""),
        call(1, None, None, ":1}"),
        chunk(json!({}), json!("tool_calls")),
        usage_chunk(100, 0, 20),
    ]);
    let mut expected = vec![
        message_start(),
        start(0, json!({"type": "text", "text": ""})),
        text(0, "Checking."),
        stop(0),
        start(
            1,
            json!({"type": "tool_use", "id": "call_a", "name": "get", "input": {}}),
        ),
        args(1, "{\"ci"),
        args(1, "ty\":\"Oslo\"}"),
        stop(1),
        start(
            2,
            json!({"type": "tool_use", "id": "call_b", "name": "put", "input": {}}),
        ),
        args(2, "{\"x\""),
        args(2, ":1}"),
        stop(2),
    ];
    expected.extend(end("tool_use", 100, 20, 0));
    assert_eq!(got, expected);
}

#[test]
fn closing_waits_for_the_usage_chunk() {
    let mut s = OpenAiToAnthropicStream::new("claude-client", "msg_1");
    let first = s.push(&chunk(json!({"content": "Hi"}), Value::Null).to_string());
    assert_eq!(
        first.map(payloads).ok(),
        Some(vec![
            message_start(),
            start(0, json!({"type": "text", "text": ""})),
            text(0, "Hi")
        ])
    );
    // The finish reason closes the block but not the message: usage is still to come.
    let fin = s.push(&chunk(json!({}), json!("length")).to_string());
    assert_eq!(fin.map(payloads).ok(), Some(vec![stop(0)]));
    let last = s.push(&usage_chunk(7, 0, 9).to_string());
    assert_eq!(
        last.map(payloads).ok(),
        Some(end("max_tokens", 7, 9, 0).to_vec())
    );
    assert_eq!(
        s.usage(),
        Usage {
            input_tokens: 7,
            output_tokens: 9,
            ..Usage::default()
        }
    );
    assert_eq!(s.push("[DONE]").ok(), Some(vec![]));
    assert!(s.finish().is_empty());
}

#[test]
fn usage_on_the_finish_chunk_closes_immediately() {
    let mut with_usage = chunk(json!({"content": "ok"}), json!("stop"));
    with_usage["usage"] = json!({"prompt_tokens": 4, "completion_tokens": 1});
    // Usage on the very first chunk is already known when message_start goes out.
    let mut expected = vec![
        message_start_with(4),
        start(0, json!({"type": "text", "text": ""})),
        text(0, "ok"),
        stop(0),
    ];
    expected.extend(end("end_turn", 4, 1, 0));
    assert_eq!(run(&[with_usage]), expected);
}

#[test]
fn stream_cut_before_finish_reason_still_closes() {
    let got = run(&[
        chunk(json!({"content": "partial"}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_z", "type": "function",
                                   "function": {"name": "f", "arguments": "{\"a"}}]}),
            Value::Null,
        ),
    ]);
    let mut expected = vec![
        message_start(),
        start(0, json!({"type": "text", "text": ""})),
        text(0, "partial"),
        stop(0),
        start(
            1,
            json!({"type": "tool_use", "id": "call_z", "name": "f", "input": {}}),
        ),
        args(1, "{\"a"),
        stop(1),
    ];
    expected.extend(end("tool_use", 0, 0, 0));
    assert_eq!(got, expected);
}

#[test]
fn done_without_usage_and_edge_cases() {
    // [DONE] closes the message even when the usage chunk never came.
    let mut expected = vec![message_start()];
    expected.extend(end("end_turn", 0, 0, 0));
    assert_eq!(
        run(&[
            chunk(json!({"role": "assistant"}), json!("stop")),
            json!("[DONE]")
        ]),
        expected
    );
    // Nothing received means nothing owed.
    assert!(run(&[]).is_empty());
    // Tool calls without index or id still become well-formed blocks; refusals are text.
    let got = run(&[
        chunk(
            json!({"tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}),
            Value::Null,
        ),
        chunk(json!({"refusal": "no"}), json!("stop")),
    ]);
    let mut expected = vec![
        message_start(),
        start(
            0,
            json!({"type": "tool_use", "id": "toolu_msg_1_0", "name": "f", "input": {}}),
        ),
        args(0, "{}"),
        stop(0),
        start(1, json!({"type": "text", "text": ""})),
        text(1, "no"),
        stop(1),
    ];
    expected.extend(end("tool_use", 0, 0, 0));
    assert_eq!(got, expected);
}

#[test]
fn upstream_errors_and_bad_json_are_reported() {
    let mut s = OpenAiToAnthropicStream::new("m", "msg_1");
    let err = s.push(r#"{"error":{"message":"quota","type":"insufficient_quota"}}"#);
    match err {
        Err(TranslateError::Invalid(msg)) => {
            assert_eq!(msg, "upstream error (insufficient_quota): quota")
        }
        Ok(v) => panic!("expected error, got {v:?}"),
    }
    assert!(matches!(s.push("{nope"), Err(TranslateError::Invalid(_))));
    assert_eq!(s.push("  ").ok(), Some(vec![]));
}

#[test]
fn encoded_events_carry_event_lines() {
    let mut s = OpenAiToAnthropicStream::new("m", "msg_1");
    let events = s
        .push(&chunk(json!({"content": "x"}), Value::Null).to_string())
        .unwrap_or_default();
    let wire: String = events.iter().map(SseOut::encode).collect();
    assert!(wire.starts_with("event: message_start\ndata: {"));
    assert!(wire.contains("\n\nevent: content_block_delta\ndata: {"));
    assert!(wire.ends_with("}\n\n"));
}
