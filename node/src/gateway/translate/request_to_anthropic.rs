//! OpenAI Chat Completions request -> Anthropic Messages request.

use serde_json::{json, Map, Value};

use super::shared::{as_object, copy_number, invalid, parse_arguments, req_str, TranslateError};
use super::tools::{anthropic_tool_id, openai_tool_choice_to_anthropic, openai_tools_to_anthropic};

/// Anthropic requires `max_tokens`; this is used when the OpenAI client sent no limit.
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// OpenAI chat.completions request -> Anthropic Messages request for `upstream_model`.
///
/// System and developer messages are hoisted into `system`, `tool` messages become
/// `tool_result` blocks, and consecutive messages of the same role are merged because Anthropic
/// requires strictly alternating turns. Sampling options Anthropic lacks are dropped, and
/// `temperature` is clamped to Anthropic's 0..=1 range rather than rejected upstream.
pub fn openai_to_anthropic_request(
    req: &Value,
    upstream_model: &str,
) -> Result<Value, TranslateError> {
    let obj = as_object(req, "request")?;
    let input = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "expected array"))?;

    let mut system = Vec::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in input.iter().enumerate() {
        let path = format!("messages[{i}]");
        let m = as_object(message, &path)?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let cpath = format!("{path}.content");
        match req_str(m, "role", &path)? {
            "system" | "developer" => {
                let text = plain_text(content, &cpath)?;
                if !text.is_empty() {
                    system.push(text);
                }
            }
            "user" => push_turn(&mut turns, "user", user_blocks(content, &cpath)?),
            "assistant" => push_turn(&mut turns, "assistant", assistant_blocks(m, &path)?),
            "tool" => push_turn(&mut turns, "user", vec![tool_result(m, &path)?]),
            other => {
                return Err(invalid(
                    format!("{path}.role"),
                    format!("unsupported role \"{other}\""),
                ))
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(upstream_model));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, blocks)| json!({"role": role, "content": compact(blocks)}))
        .collect();
    out.insert("messages".into(), Value::Array(messages));

    let max_tokens = match obj
        .get("max_completion_tokens")
        .filter(|v| !v.is_null())
        .map(|v| ("max_completion_tokens", v))
        .or_else(|| obj.get("max_tokens").map(|v| ("max_tokens", v)))
    {
        None | Some((_, Value::Null)) => DEFAULT_MAX_TOKENS,
        Some((key, v)) => v
            .as_u64()
            .ok_or_else(|| invalid(key, "expected non-negative integer"))?,
    };
    out.insert("max_tokens".into(), json!(max_tokens));
    match obj.get("temperature") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            let t = n.as_f64().unwrap_or(1.0).clamp(0.0, 1.0);
            out.insert("temperature".into(), json!(t));
        }
        Some(_) => return Err(invalid("temperature", "expected number")),
    }
    copy_number(obj, "top_p", &mut out, "top_p")?;
    if let Some(stop) = stop_sequences(obj.get("stop"))? {
        out.insert("stop_sequences".into(), stop);
    }
    match obj.get("stream") {
        Some(Value::Bool(b)) => {
            out.insert("stream".into(), json!(b));
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(invalid("stream", "expected boolean")),
    }
    if let Some(user) = obj.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(n) = obj.get("n").and_then(Value::as_u64) {
        if n > 1 {
            return Err(invalid("n", "only one choice is supported"));
        }
    }

    let tools = match obj.get("tools").filter(|v| !v.is_null()) {
        Some(tools) => openai_tools_to_anthropic(tools)?,
        None => Vec::new(),
    };
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let disable_parallel = obj.get("parallel_tool_calls") == Some(&Value::Bool(false));
        let choice = match obj.get("tool_choice").filter(|v| !v.is_null()) {
            Some(choice) => Some(openai_tool_choice_to_anthropic(choice)?),
            None if disable_parallel => Some(json!({"type": "auto"})),
            None => None,
        };
        if let Some(mut choice) = choice {
            // Anthropic carries the parallelism switch on tool_choice; "none" cannot take it.
            if disable_parallel && choice["type"] != "none" {
                choice["disable_parallel_tool_use"] = json!(true);
            }
            out.insert("tool_choice".into(), choice);
        }
    }
    Ok(Value::Object(out))
}

/// Appends a turn, merging it into the previous one when the role repeats. Empty turns are
/// dropped because Anthropic rejects empty content; merging then keeps roles alternating.
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// Uses the plain string form for a lone text block, which is what clients usually sent.
fn compact(blocks: Vec<Value>) -> Value {
    if let [only] = blocks.as_slice() {
        if only["type"] == "text" {
            if let Some(text) = only["text"].as_str() {
                return json!(text);
            }
        }
    }
    Value::Array(blocks)
}

/// Reads text-only content (system, developer and tool messages): string, null or text parts.
fn plain_text(content: &Value, path: &str) -> Result<String, TranslateError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let ppath = format!("{path}[{j}]");
                let p = as_object(part, &ppath)?;
                match req_str(p, "type", &ppath)? {
                    "text" => texts.push(req_str(p, "text", &ppath)?),
                    other => {
                        return Err(invalid(
                            format!("{ppath}.type"),
                            format!("unsupported part \"{other}\" in text-only content"),
                        ))
                    }
                }
            }
            Ok(texts.join("\n\n"))
        }
        _ => Err(invalid(path, "expected string or array")),
    }
}

/// A text block, or nothing for empty text, which Anthropic rejects.
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// Converts user content: a string or an array of text, image_url and file parts.
fn user_blocks(content: &Value, path: &str) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Value::String(s) => return Ok(text_block(s).into_iter().collect()),
        Value::Array(parts) => parts,
        _ => return Err(invalid(path, "expected string or array")),
    };
    let mut blocks = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let ppath = format!("{path}[{j}]");
        let p = as_object(part, &ppath)?;
        match req_str(p, "type", &ppath)? {
            "text" => blocks.extend(text_block(req_str(p, "text", &ppath)?)),
            "image_url" => {
                let ipath = format!("{ppath}.image_url");
                // The spec nests the URL in an object, but some clients send a bare string.
                let url = match p.get("image_url") {
                    Some(Value::String(url)) => url.as_str(),
                    Some(v) => req_str(as_object(v, &ipath)?, "url", &ipath)?,
                    None => return Err(invalid(ipath, "expected object")),
                };
                blocks.push(image_block(url, &ipath)?);
            }
            "file" => {
                let fpath = format!("{ppath}.file");
                let file = as_object(p.get("file").unwrap_or(&Value::Null), &fpath)?;
                let data = req_str(file, "file_data", &fpath)?;
                let (media, data) = split_data_url(data)
                    .ok_or_else(|| invalid(format!("{fpath}.file_data"), "expected data URL"))?;
                blocks.push(json!({"type": "document", "source": {
                    "type": "base64", "media_type": media, "data": data,
                }}));
            }
            other => {
                return Err(invalid(
                    format!("{ppath}.type"),
                    format!("unsupported part \"{other}\""),
                ))
            }
        }
    }
    Ok(blocks)
}

/// Splits `data:<media>;base64,<data>` into its media type and payload.
fn split_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

/// Converts an image URL: data URLs become base64 sources, anything else a URL source.
fn image_block(url: &str, path: &str) -> Result<Value, TranslateError> {
    if url.starts_with("data:") {
        let (media, data) =
            split_data_url(url).ok_or_else(|| invalid(path, "expected base64 data URL"))?;
        Ok(json!({"type": "image", "source": {
            "type": "base64", "media_type": media, "data": data,
        }}))
    } else {
        Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
    }
}

/// Converts an assistant message: its text plus one `tool_use` block per tool call.
fn assistant_blocks(m: &Map<String, Value>, path: &str) -> Result<Vec<Value>, TranslateError> {
    let cpath = format!("{path}.content");
    let mut blocks = Vec::new();
    match m.get("content").unwrap_or(&Value::Null) {
        Value::Null => {}
        Value::String(s) => blocks.extend(text_block(s)),
        Value::Array(parts) => {
            for (j, part) in parts.iter().enumerate() {
                let ppath = format!("{cpath}[{j}]");
                let p = as_object(part, &ppath)?;
                match req_str(p, "type", &ppath)? {
                    "text" => blocks.extend(text_block(req_str(p, "text", &ppath)?)),
                    "refusal" => blocks.extend(text_block(req_str(p, "refusal", &ppath)?)),
                    other => {
                        return Err(invalid(
                            format!("{ppath}.type"),
                            format!("unsupported part \"{other}\""),
                        ))
                    }
                }
            }
        }
        _ => return Err(invalid(cpath, "expected string, array or null")),
    }
    if let Some(calls) = m.get("tool_calls").filter(|v| !v.is_null()) {
        let tpath = format!("{path}.tool_calls");
        let calls = calls
            .as_array()
            .ok_or_else(|| invalid(&tpath, "expected array"))?;
        for (k, call) in calls.iter().enumerate() {
            let cpath = format!("{tpath}[{k}]");
            let c = as_object(call, &cpath)?;
            let fpath = format!("{cpath}.function");
            let f = as_object(c.get("function").unwrap_or(&Value::Null), &fpath)?;
            let arguments = f.get("arguments").and_then(Value::as_str).unwrap_or("");
            blocks.push(json!({
                "type": "tool_use",
                "id": anthropic_tool_id(req_str(c, "id", &cpath)?),
                "name": req_str(f, "name", &fpath)?,
                "input": parse_arguments(arguments),
            }));
        }
    }
    Ok(blocks)
}

/// Converts a `tool` message to a `tool_result` block.
fn tool_result(m: &Map<String, Value>, path: &str) -> Result<Value, TranslateError> {
    let id = anthropic_tool_id(req_str(m, "tool_call_id", path)?);
    let text = plain_text(
        m.get("content").unwrap_or(&Value::Null),
        &format!("{path}.content"),
    )?;
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    if !text.is_empty() {
        block["content"] = json!(text);
    }
    Ok(block)
}

/// Reads `stop` (string or array of strings). Anthropic rejects whitespace-only sequences.
fn stop_sequences(stop: Option<&Value>) -> Result<Option<Value>, TranslateError> {
    let list: Vec<&str> = match stop {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("stop", "expected string or array of strings"))?,
        Some(_) => return Err(invalid("stop", "expected string or array of strings")),
    };
    let list: Vec<&str> = list.into_iter().filter(|s| !s.trim().is_empty()).collect();
    Ok((!list.is_empty()).then(|| json!(list)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Translates `input` for model "up" and compares the whole result with `expected`.
    fn check(name: &str, input: Value, expected: Value) {
        let got = openai_to_anthropic_request(&input, "up")
            .unwrap_or_else(|e| panic!("{name}: unexpected error {e}"));
        assert_eq!(got, expected, "{name}");
    }

    #[test]
    fn converts_requests() {
        let cases = vec![
            (
                "system and developer hoisted, defaults, scalar parameters, stop string",
                json!({
                    "model": "gpt-x", "temperature": 1.7, "top_p": 0.5, "stop": "END",
                    "user": "u1", "stream": true, "stream_options": {"include_usage": true},
                    "messages": [
                        {"role": "system", "content": "A"},
                        {"role": "developer", "content": [{"type": "text", "text": "B"}]},
                        {"role": "user", "content": "Hi"},
                        {"role": "user", "content": [{"type": "text", "text": "there"}]}
                    ]
                }),
                json!({
                    "model": "up", "system": "A\n\nB", "max_tokens": 4096, "temperature": 1.0,
                    "top_p": 0.5, "stop_sequences": ["END"], "stream": true,
                    "metadata": {"user_id": "u1"},
                    "messages": [{"role": "user", "content": [
                        {"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}
                    ]}]
                }),
            ),
            (
                "tool calls and merged tool results, arguments parsed or wrapped",
                json!({
                    "max_completion_tokens": 50, "max_tokens": 10, "stop": ["a", " "],
                    "messages": [
                        {"role": "user", "content": "weather?"},
                        {"role": "assistant", "content": null, "tool_calls": [
                            {"id": "call_1", "type": "function",
                             "function": {"name": "get", "arguments": "{\"city\":\"Oslo\"}"}},
                            {"id": "functions.get:1", "type": "function",
                             "function": {"name": "get", "arguments": "{bad"}}
                        ]},
                        {"role": "tool", "tool_call_id": "call_1", "content": "5C"},
                        {"role": "tool", "tool_call_id": "functions.get:1",
                         "content": [{"type": "text", "text": "7C"}]},
                        {"role": "user", "content": "thanks"},
                        {"role": "assistant", "content": "Welcome."}
                    ]
                }),
                json!({
                    "model": "up", "max_tokens": 50, "stop_sequences": ["a"],
                    "messages": [
                        {"role": "user", "content": "weather?"},
                        {"role": "assistant", "content": [
                            {"type": "tool_use", "id": "call_1", "name": "get",
                             "input": {"city": "Oslo"}},
                            {"type": "tool_use", "id": "functions_get_1", "name": "get",
                             "input": {"_raw": "{bad"}}
                        ]},
                        {"role": "user", "content": [
                            {"type": "tool_result", "tool_use_id": "call_1", "content": "5C"},
                            {"type": "tool_result", "tool_use_id": "functions_get_1",
                             "content": "7C"},
                            {"type": "text", "text": "thanks"}
                        ]},
                        {"role": "assistant", "content": "Welcome."}
                    ]
                }),
            ),
            (
                "images: data URL, http URL, bare string form",
                json!({
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                        {"type": "image_url", "image_url": {"url": "https://x/y.jpg", "detail": "low"}},
                        {"type": "image_url", "image_url": "https://x/z.jpg"}
                    ]}]
                }),
                json!({
                    "model": "up", "max_tokens": 5,
                    "messages": [{"role": "user", "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                     "data": "AAA"}},
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
                        {"type": "image", "source": {"type": "url", "url": "https://x/z.jpg"}}
                    ]}]
                }),
            ),
            (
                "tools, required tool_choice, parallel calls disabled",
                json!({
                    "max_tokens": 5, "parallel_tool_calls": false, "tool_choice": "required",
                    "messages": [{"role": "user", "content": "x"}],
                    "tools": [
                        {"type": "function", "function": {"name": "get", "description": "Get",
                         "parameters": {"type": "object", "properties": {}}}},
                        {"type": "function", "function": {"name": "bare"}}
                    ]
                }),
                json!({
                    "model": "up", "max_tokens": 5,
                    "messages": [{"role": "user", "content": "x"}],
                    "tools": [
                        {"name": "get", "description": "Get",
                         "input_schema": {"type": "object", "properties": {}}},
                        {"name": "bare", "input_schema": {"type": "object", "properties": {}}}
                    ],
                    "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
                }),
            ),
        ];
        for (name, input, expected) in cases {
            check(name, input, expected);
        }
    }

    #[test]
    fn rejects_malformed_input_naming_the_field() {
        let cases = [
            (json!({"messages": "hi"}), "messages: expected array"),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages[0].content: expected string or array",
            ),
            (
                json!({"messages": [{"role": "function", "content": "x"}]}),
                "messages[0].role: unsupported role \"function\"",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].tool_call_id: expected string",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c",
                                     "function": {"arguments": "{}"}}]}]}),
                "messages[0].tool_calls[0].function.name: expected string",
            ),
            (
                json!({"messages": [{"role": "user", "content": [
                    {"type": "input_audio", "input_audio": {}}]}]}),
                "messages[0].content[0].type: unsupported part \"input_audio\"",
            ),
            (
                json!({"messages": [], "stop": 3}),
                "stop: expected string or array of strings",
            ),
            (
                json!({"messages": [], "max_tokens": -1}),
                "max_tokens: expected non-negative integer",
            ),
        ];
        for (input, expected) in cases {
            match openai_to_anthropic_request(&input, "up") {
                Err(TranslateError::Invalid(msg)) => assert_eq!(msg, expected),
                Ok(v) => panic!("expected error {expected}, got {v}"),
            }
        }
    }
}
