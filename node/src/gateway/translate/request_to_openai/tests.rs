//! Unit tests of `request_to_openai`.

use super::*;

/// Translates `input` for model "up" and compares the whole result with `expected`.
fn check(name: &str, input: Value, expected: Value) {
    let got = anthropic_to_openai_request(&input, "up")
        .unwrap_or_else(|e| panic!("{name}: unexpected error {e}"));
    assert_eq!(got, expected, "{name}");
}

#[test]
fn converts_requests() {
    let cases = vec![
        (
            "system string, scalar parameters, stop, stream, user",
            json!({
                "model": "claude-x", "system": "Be brief.", "max_tokens": 100,
                "temperature": 0.5, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"],
                "stream": true, "metadata": {"user_id": "u1"},
                "messages": [{"role": "user", "content": "Hi"}]
            }),
            json!({
                "model": "up", "max_tokens": 100, "temperature": 0.5, "top_p": 0.9,
                "stop": ["END"], "stream": true, "stream_options": {"include_usage": true},
                "user": "u1",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"}
                ]
            }),
        ),
        (
            "system blocks with cache_control and a trailing system message",
            json!({
                "max_tokens": 10,
                "system": [
                    {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "B"}
                ],
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "one"}, {"type": "text", "text": "two"}
                    ]},
                    {"role": "system", "content": "late"}
                ]
            }),
            json!({
                "model": "up", "max_tokens": 10,
                "messages": [
                    {"role": "system", "content": "A\n\nB"},
                    {"role": "user", "content": "one\n\ntwo"},
                    {"role": "system", "content": "late"}
                ]
            }),
        ),
        (
            "tool_use and tool_result round trip, thinking dropped",
            json!({
                "max_tokens": 10,
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get",
                         "input": {"city": "Oslo"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "get", "input": {}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "text", "text": "and then?"},
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "5C"},
                        {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                         "content": [{"type": "text", "text": "boom"}]}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "toolu_3", "name": "get", "input": {}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_3"}
                    ]}
                ]
            }),
            json!({
                "model": "up", "max_tokens": 10,
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "toolu_1", "type": "function",
                         "function": {"name": "get", "arguments": "{\"city\":\"Oslo\"}"}},
                        {"id": "toolu_2", "type": "function",
                         "function": {"name": "get", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "5C"},
                    {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
                    {"role": "user", "content": "and then?"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "toolu_3", "type": "function",
                         "function": {"name": "get", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "toolu_3", "content": ""}
                ]
            }),
        ),
        (
            "images: base64, url, and an image returned by a tool",
            json!({
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image", "source": {"type": "base64",
                         "media_type": "image/png", "data": "AAA"}},
                        {"type": "image", "source": {"type": "url",
                         "url": "https://x/y.jpg"}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "t1", "name": "shot", "input": {}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": [
                            {"type": "text", "text": "done"},
                            {"type": "image", "source": {"type": "base64",
                             "media_type": "image/jpeg", "data": "BBB"}}
                        ]}
                    ]}
                ]
            }),
            json!({
                "model": "up",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                        {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}}
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "t1", "type": "function",
                         "function": {"name": "shot", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "t1", "content": "done"},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBB"}}
                    ]}
                ]
            }),
        ),
        (
            "documents: PDF as a file part, text documents as text, also in tool results",
            json!({
                "messages": [
                    {"role": "user", "content": [
                        {"type": "document", "title": "a.pdf", "source": {"type": "base64",
                         "media_type": "application/pdf", "data": "PDF"}},
                        {"type": "document", "source": {"type": "text",
                         "media_type": "text/plain", "data": "plain doc"}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "t1", "name": "read", "input": {}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": [
                            {"type": "document", "source": {"type": "text",
                             "media_type": "text/plain", "data": "file body"}}
                        ]}
                    ]}
                ]
            }),
            json!({
                "model": "up",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "file", "file": {"filename": "a.pdf",
                         "file_data": "data:application/pdf;base64,PDF"}},
                        {"type": "text", "text": "plain doc"}
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "t1", "type": "function",
                         "function": {"name": "read", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "t1", "content": "file body"}
                ]
            }),
        ),
        (
            "tools with server tools skipped, tool_choice tool, parallel disabled",
            json!({
                "messages": [{"role": "user", "content": "x"}],
                "tools": [
                    {"name": "get", "description": "Get it", "input_schema":
                        {"type": "object", "properties": {"q": {"type": "string"}}}},
                    {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
                    {"type": "custom", "name": "bare"}
                ],
                "tool_choice": {"type": "tool", "name": "get",
                                "disable_parallel_tool_use": true}
            }),
            json!({
                "model": "up",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [
                    {"type": "function", "function": {"name": "get", "description": "Get it",
                     "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
                    {"type": "function", "function": {"name": "bare",
                     "parameters": {"type": "object", "properties": {}}}}
                ],
                "tool_choice": {"type": "function", "function": {"name": "get"}},
                "parallel_tool_calls": false
            }),
        ),
        (
            "tool_choice without any usable tool is dropped",
            json!({
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "bash_20250124", "name": "bash"}],
                "tool_choice": {"type": "any"},
                "stream": false
            }),
            json!({"model": "up", "messages": [{"role": "user", "content": "x"}]}),
        ),
    ];
    for (name, input, expected) in cases {
        check(name, input, expected);
    }
}

#[test]
fn rejects_malformed_input_naming_the_field() {
    let cases = [
        (json!({}), "messages: expected array"),
        (json!({"messages": {}}), "messages: expected array"),
        (
            json!({"messages": [{"role": "user", "content": "a"}, {"role": "user"},
                                {"role": "user", "content": 1}]}),
            "messages[1].content: expected string or array",
        ),
        (
            json!({"messages": [{"role": "bot", "content": "a"}]}),
            "messages[0].role: unsupported role \"bot\"",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": [
                {"type": "tool_use", "name": "f", "input": {}}]}]}),
            "messages[0].content[0].id: expected string",
        ),
        (
            json!({"messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
            "messages[0].content[0].source.type: unsupported image source \"file\"",
        ),
        (
            json!({"messages": [], "max_tokens": "10"}),
            "max_tokens: expected number",
        ),
        (
            json!({"messages": [], "system": 3}),
            "system: expected string or array",
        ),
    ];
    for (input, expected) in cases {
        match anthropic_to_openai_request(&input, "up") {
            Err(TranslateError::Invalid(msg)) => assert_eq!(msg, expected),
            Ok(v) => panic!("expected error {expected}, got {v}"),
        }
    }
}
