//! Tool definitions, `tool_choice` and tool-call ids, translated in both directions.

use serde_json::{json, Map, Value};

use super::shared::{as_object, invalid, req_str, TranslateError};

/// The schema used when a tool declares no parameters; both vendors require an object schema.
fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

/// Converts Anthropic tool definitions to OpenAI function tools. Server tools (web search, code
/// execution, ...) run on Anthropic's side and cannot be offered to another vendor, so they are
/// skipped.
pub(super) fn anthropic_tools_to_openai(tools: &Value) -> Result<Vec<Value>, TranslateError> {
    let list = tools
        .as_array()
        .ok_or_else(|| invalid("tools", "expected array"))?;
    let mut out = Vec::new();
    for (i, tool) in list.iter().enumerate() {
        let path = format!("tools[{i}]");
        let t = as_object(tool, &path)?;
        let kind = t.get("type").and_then(Value::as_str);
        let schema = t.get("input_schema");
        if kind.is_some_and(|k| k != "custom") && schema.is_none() {
            continue;
        }
        let mut function = Map::new();
        function.insert("name".into(), json!(req_str(t, "name", &path)?));
        if let Some(description) = t.get("description").and_then(Value::as_str) {
            function.insert("description".into(), json!(description));
        }
        let parameters = schema.cloned().unwrap_or_else(empty_schema);
        function.insert("parameters".into(), parameters);
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// Converts an Anthropic `tool_choice`, returning the OpenAI value and the
/// `parallel_tool_calls` setting that `disable_parallel_tool_use` implies, if any.
pub(super) fn anthropic_tool_choice_to_openai(
    choice: &Value,
) -> Result<(Value, Option<bool>), TranslateError> {
    let c = as_object(choice, "tool_choice")?;
    let mapped = match req_str(c, "type", "tool_choice")? {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            json!({"type": "function", "function": {"name": req_str(c, "name", "tool_choice")?}})
        }
        other => {
            return Err(invalid(
                "tool_choice.type",
                format!("unsupported tool choice \"{other}\""),
            ))
        }
    };
    let parallel = match c.get("disable_parallel_tool_use") {
        Some(Value::Bool(true)) => Some(false),
        _ => None,
    };
    Ok((mapped, parallel))
}

/// Converts OpenAI function tools to Anthropic custom tools.
pub(super) fn openai_tools_to_anthropic(tools: &Value) -> Result<Vec<Value>, TranslateError> {
    let list = tools
        .as_array()
        .ok_or_else(|| invalid("tools", "expected array"))?;
    let mut out = Vec::new();
    for (i, tool) in list.iter().enumerate() {
        let path = format!("tools[{i}]");
        let t = as_object(tool, &path)?;
        let kind = req_str(t, "type", &path)?;
        if kind != "function" {
            return Err(invalid(
                format!("{path}.type"),
                format!("unsupported tool type \"{kind}\""),
            ));
        }
        let fpath = format!("{path}.function");
        let f = as_object(t.get("function").unwrap_or(&Value::Null), &fpath)?;
        let mut converted = Map::new();
        converted.insert("name".into(), json!(req_str(f, "name", &fpath)?));
        if let Some(description) = f.get("description").and_then(Value::as_str) {
            converted.insert("description".into(), json!(description));
        }
        let schema = f
            .get("parameters")
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or_else(empty_schema);
        converted.insert("input_schema".into(), schema);
        out.push(Value::Object(converted));
    }
    Ok(out)
}

/// Converts an OpenAI `tool_choice` ("auto", "none", "required" or a named function).
pub(super) fn openai_tool_choice_to_anthropic(choice: &Value) -> Result<Value, TranslateError> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            other => Err(invalid(
                "tool_choice",
                format!("unsupported tool choice \"{other}\""),
            )),
        },
        Value::Object(c) => {
            let f = as_object(
                c.get("function").unwrap_or(&Value::Null),
                "tool_choice.function",
            )?;
            Ok(json!({"type": "tool", "name": req_str(f, "name", "tool_choice.function")?}))
        }
        _ => Err(invalid("tool_choice", "expected string or object")),
    }
}

/// Anthropic only accepts tool ids matching `[A-Za-z0-9_-]+`, while some OpenAI-compatible
/// providers use ids like `functions.get:0`. Replacing other characters is deterministic, so a
/// tool call and its result still agree.
pub(super) fn anthropic_tool_id(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "toolu_empty".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_choice_both_ways() {
        // (Anthropic, OpenAI): each row must translate in both directions.
        let cases = [
            (json!({"type": "auto"}), json!("auto")),
            (json!({"type": "any"}), json!("required")),
            (json!({"type": "none"}), json!("none")),
            (
                json!({"type": "tool", "name": "f"}),
                json!({"type": "function", "function": {"name": "f"}}),
            ),
        ];
        for (anthropic, openai) in cases {
            let forward = anthropic_tool_choice_to_openai(&anthropic).ok();
            assert_eq!(forward, Some((openai.clone(), None)), "{anthropic}");
            let back = openai_tool_choice_to_anthropic(&openai).ok();
            assert_eq!(back, Some(anthropic), "{openai}");
        }
        let no_parallel = json!({"type": "auto", "disable_parallel_tool_use": true});
        assert_eq!(
            anthropic_tool_choice_to_openai(&no_parallel).ok(),
            Some((json!("auto"), Some(false)))
        );
    }

    #[test]
    fn tool_definitions_both_ways() {
        let anthropic = json!([
            {"name": "get", "description": "Get it", "input_schema":
                {"type": "object", "properties": {"q": {"type": "string"}}},
             "cache_control": {"type": "ephemeral"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "custom", "name": "bare"}
        ]);
        let openai = json!([
            {"type": "function", "function": {"name": "get", "description": "Get it",
             "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "bare",
             "parameters": {"type": "object", "properties": {}}}}
        ]);
        assert_eq!(
            anthropic_tools_to_openai(&anthropic).ok(),
            openai.as_array().cloned()
        );
        let back = json!([
            {"name": "get", "description": "Get it",
             "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
            {"name": "bare", "input_schema": {"type": "object", "properties": {}}}
        ]);
        assert_eq!(
            openai_tools_to_anthropic(&openai).ok(),
            back.as_array().cloned()
        );
    }

    #[test]
    fn invalid_tools_name_the_field() {
        let cases = [
            (
                anthropic_tools_to_openai(&json!([{"description": "x"}])).err(),
                "tools[0].name: expected string",
            ),
            (
                openai_tools_to_anthropic(&json!([{"type": "custom", "custom": {}}])).err(),
                "tools[0].type: unsupported tool type \"custom\"",
            ),
            (
                openai_tools_to_anthropic(&json!({})).err(),
                "tools: expected array",
            ),
            (
                anthropic_tool_choice_to_openai(&json!({"type": "maybe"})).err(),
                "tool_choice.type: unsupported tool choice \"maybe\"",
            ),
            (
                openai_tool_choice_to_anthropic(&json!("sometimes")).err(),
                "tool_choice: unsupported tool choice \"sometimes\"",
            ),
        ];
        for (got, expected) in cases {
            match got {
                Some(TranslateError::Invalid(msg)) => assert_eq!(msg, expected),
                None => panic!("expected error {expected}"),
            }
        }
    }

    #[test]
    fn tool_ids_are_sanitized_deterministically() {
        assert_eq!(anthropic_tool_id("call_AB-9"), "call_AB-9");
        assert_eq!(anthropic_tool_id("functions.get:0"), "functions_get_0");
        assert_eq!(anthropic_tool_id(""), "toolu_empty");
    }
}
