//! Anthropic Messages request -> OpenAI Chat Completions request.

use serde_json::{json, Map, Value};

use super::shared::{as_object, copy_number, invalid, req_str, TranslateError};
use super::tools::{anthropic_tool_choice_to_openai, anthropic_tools_to_openai};

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
mod tests;
