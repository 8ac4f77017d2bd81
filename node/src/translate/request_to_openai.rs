//! Anthropic Messages request -> OpenAI Chat Completions request.

use serde_json::{json, Map, Value};

use super::tools::{anthropic_tool_choice_to_openai, anthropic_tools_to_openai};
use super::{as_object, copy_number, invalid, req_str, TranslateError};

/// Separator between text blocks that become one OpenAI string; a blank line keeps separate
/// blocks (for example a system reminder and the actual prompt) visibly apart for the model.
const JOIN: &str = "\n\n";

/// Anthropic Messages request -> OpenAI chat.completions request for `upstream_model`.
///
/// Fields OpenAI has no equivalent for (`top_k`, `thinking`, `cache_control`) are dropped.
pub fn anthropic_to_openai_request(
    req: &Value,
    upstream_model: &str,
) -> Result<Value, TranslateError> {
    let obj = as_object(req, "request")?;
    let mut out = Map::new();
    out.insert("model".into(), json!(upstream_model));

    let mut messages = Vec::new();
    if let Some(system) = obj.get("system").filter(|v| !v.is_null()) {
        let text = system_text(system, "system")?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let input = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "expected array"))?;
    for (i, message) in input.iter().enumerate() {
        convert_message(message, &format!("messages[{i}]"), &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));

    copy_number(obj, "max_tokens", &mut out, "max_tokens")?;
    copy_number(obj, "temperature", &mut out, "temperature")?;
    copy_number(obj, "top_p", &mut out, "top_p")?;
    if let Some(stop) = obj.get("stop_sequences").filter(|v| !v.is_null()) {
        let ok = stop
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        if !ok {
            return Err(invalid("stop_sequences", "expected array of strings"));
        }
        out.insert("stop".into(), stop.clone());
    }
    match obj.get("stream") {
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), json!(true));
            // Without this OpenAI streams carry no usage at all, and the gateway must account.
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(Value::Bool(false)) | Some(Value::Null) | None => {}
        Some(_) => return Err(invalid("stream", "expected boolean")),
    }
    if let Some(user) = req.pointer("/metadata/user_id").and_then(Value::as_str) {
        out.insert("user".into(), json!(user));
    }

    let tools = match obj.get("tools").filter(|v| !v.is_null()) {
        Some(tools) => anthropic_tools_to_openai(tools)?,
        None => Vec::new(),
    };
    // OpenAI rejects tool_choice without tools, so both are omitted when no tool survives.
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = obj.get("tool_choice").filter(|v| !v.is_null()) {
            let (choice, parallel) = anthropic_tool_choice_to_openai(choice)?;
            out.insert("tool_choice".into(), choice);
            if let Some(parallel) = parallel {
                out.insert("parallel_tool_calls".into(), json!(parallel));
            }
        }
    }
    Ok(Value::Object(out))
}

/// Reads a system prompt or `system` message content: a string or an array of text blocks.
fn system_text(v: &Value, path: &str) -> Result<String, TranslateError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut texts = Vec::new();
            for (j, block) in blocks.iter().enumerate() {
                let bpath = format!("{path}[{j}]");
                let b = as_object(block, &bpath)?;
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(invalid(format!("{bpath}.type"), "expected \"text\""));
                }
                let text = req_str(b, "text", &bpath)?;
                if !text.is_empty() {
                    texts.push(text);
                }
            }
            Ok(texts.join(JOIN))
        }
        _ => Err(invalid(path, "expected string or array")),
    }
}

/// Appends the OpenAI message(s) for one Anthropic message to `out`.
fn convert_message(
    message: &Value,
    path: &str,
    out: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let m = as_object(message, path)?;
    let role = req_str(m, "role", path)?;
    let content_path = format!("{path}.content");
    let content = m.get("content").unwrap_or(&Value::Null);
    match role {
        // Claude Code sends a trailing system message; it stays in place as a system message.
        "system" => {
            let text = system_text(content, &content_path)?;
            out.push(json!({"role": "system", "content": text}));
        }
        "user" => convert_user(content, &content_path, out)?,
        "assistant" => out.push(convert_assistant(content, &content_path)?),
        other => {
            return Err(invalid(
                format!("{path}.role"),
                format!("unsupported role \"{other}\""),
            ))
        }
    }
    Ok(())
}

/// Returns the `type` of a content block.
fn block_type<'a>(block: &'a Value, path: &str) -> Result<&'a str, TranslateError> {
    let b = as_object(block, path)?;
    req_str(b, "type", path)
}

/// Converts a user message. OpenAI carries tool results as separate `tool` messages that must
/// directly follow the assistant's tool calls, so they are emitted before the user's own text.
fn convert_user(content: &Value, path: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(path, "expected string or array")),
    };
    let mut parts = Vec::new();
    let mut tool_messages = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let bpath = format!("{path}[{j}]");
        match block_type(block, &bpath)? {
            "text" => {
                let text = req_str(as_object(block, &bpath)?, "text", &bpath)?;
                if !text.is_empty() {
                    parts.push(json!({"type": "text", "text": text}));
                }
            }
            "image" => parts.push(image_part(block, &bpath)?),
            "document" => parts.push(document_part(block, &bpath)?),
            "tool_result" => {
                let (message, attachments) = tool_result(block, &bpath)?;
                tool_messages.push(message);
                // OpenAI tool messages are text-only, so images or files a tool returned (for
                // example a screenshot) travel in the user message after the tool messages.
                parts.extend(attachments);
            }
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(invalid(
                    format!("{bpath}.type"),
                    format!("unsupported content block \"{other}\""),
                ))
            }
        }
    }
    let only_tools = !tool_messages.is_empty() && parts.is_empty();
    out.extend(tool_messages);
    if !only_tools {
        out.push(json!({"role": "user", "content": user_content(parts)}));
    }
    Ok(())
}

/// Collapses text-only parts into one string (the form every OpenAI-compatible server accepts)
/// and keeps the array form only when images or files are present.
fn user_content(parts: Vec<Value>) -> Value {
    if parts.iter().all(|p| p["type"] == "text") {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        json!(texts.join(JOIN))
    } else {
        Value::Array(parts)
    }
}

/// Converts an Anthropic `image` block to an OpenAI `image_url` part.
fn image_part(block: &Value, path: &str) -> Result<Value, TranslateError> {
    let spath = format!("{path}.source");
    let source = as_object(block.get("source").unwrap_or(&Value::Null), &spath)?;
    let url = match req_str(source, "type", &spath)? {
        "base64" => {
            let media = req_str(source, "media_type", &spath)?;
            let data = req_str(source, "data", &spath)?;
            format!("data:{media};base64,{data}")
        }
        "url" => req_str(source, "url", &spath)?.to_string(),
        other => {
            return Err(invalid(
                format!("{spath}.type"),
                format!("unsupported image source \"{other}\""),
            ))
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// Converts an Anthropic `document` block: plain-text documents become text, base64 documents
/// (PDFs) become an OpenAI `file` part.
fn document_part(block: &Value, path: &str) -> Result<Value, TranslateError> {
    let spath = format!("{path}.source");
    let source = as_object(block.get("source").unwrap_or(&Value::Null), &spath)?;
    match req_str(source, "type", &spath)? {
        "text" => Ok(json!({"type": "text", "text": req_str(source, "data", &spath)?})),
        "base64" => {
            let media = req_str(source, "media_type", &spath)?;
            let data = req_str(source, "data", &spath)?;
            let name = block
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("document.pdf");
            Ok(json!({"type": "file", "file": {
                "filename": name,
                "file_data": format!("data:{media};base64,{data}"),
            }}))
        }
        other => Err(invalid(
            format!("{spath}.type"),
            format!("unsupported document source \"{other}\""),
        )),
    }
}

/// Converts a `tool_result` block to an OpenAI `tool` message plus the image and file parts it
/// held, which OpenAI tool messages cannot carry.
fn tool_result(block: &Value, path: &str) -> Result<(Value, Vec<Value>), TranslateError> {
    let b = as_object(block, path)?;
    let id = req_str(b, "tool_use_id", path)?;
    let cpath = format!("{path}.content");
    let mut attachments = Vec::new();
    let text = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            let mut texts = Vec::new();
            for (k, item) in items.iter().enumerate() {
                let ipath = format!("{cpath}[{k}]");
                match block_type(item, &ipath)? {
                    "text" => {
                        let text = req_str(as_object(item, &ipath)?, "text", &ipath)?;
                        texts.push(text.to_string());
                    }
                    "image" => attachments.push(image_part(item, &ipath)?),
                    "document" => {
                        let part = document_part(item, &ipath)?;
                        // Text documents fit in the tool message; files must travel separately.
                        match part["text"].as_str() {
                            Some(text) => texts.push(text.to_string()),
                            None => attachments.push(part),
                        }
                    }
                    other => {
                        return Err(invalid(
                            format!("{ipath}.type"),
                            format!("unsupported tool result block \"{other}\""),
                        ))
                    }
                }
            }
            texts.join(JOIN)
        }
        Some(_) => return Err(invalid(cpath, "expected string or array")),
    };
    // OpenAI has no error flag on tool messages, so the model learns of the failure from text.
    let text = if b.get("is_error") == Some(&Value::Bool(true)) {
        format!("Error: {text}")
    } else {
        text
    };
    let message = json!({"role": "tool", "tool_call_id": id, "content": text});
    Ok((message, attachments))
}

/// Converts an assistant message; `tool_use` blocks become `tool_calls`.
fn convert_assistant(content: &Value, path: &str) -> Result<Value, TranslateError> {
    let blocks = match content {
        Value::String(s) => return Ok(json!({"role": "assistant", "content": s})),
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(path, "expected string or array")),
    };
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let bpath = format!("{path}[{j}]");
        let b = as_object(block, &bpath)?;
        match req_str(b, "type", &bpath)? {
            "text" => {
                let text = req_str(b, "text", &bpath)?;
                if !text.is_empty() {
                    texts.push(text);
                }
            }
            "tool_use" => {
                let id = req_str(b, "id", &bpath)?;
                let name = req_str(b, "name", &bpath)?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            // Thinking cannot be replayed to another vendor; its signature is Anthropic-only.
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(invalid(
                    format!("{bpath}.type"),
                    format!("unsupported content block \"{other}\""),
                ))
            }
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    // OpenAI expects null content next to tool calls, but a string on a plain message.
    let content = match (texts.is_empty(), calls.is_empty()) {
        (true, false) => Value::Null,
        _ => json!(texts.join(JOIN)),
    };
    message.insert("content".into(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(Value::Object(message))
}

#[cfg(test)]
mod tests {
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
}
