//! Token usage as providers report it: the JSON shapes of both dialects, and taps that
//! follow a stream's events to count what it used (estimated from streamed text when a
//! stream ends before reporting).

use crate::gateway::estimate::BytesPerToken;
use crate::gateway::sse::SseEvent;
use serde::Deserialize;
use tollgate_proto::Usage;

#[derive(Deserialize, Default, Clone, Copy)]
pub struct UsageJson {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl UsageJson {
    /// Folds a usage report into `usage`, keeping the largest figure seen for each field.
    pub fn merge_into(&self, usage: &mut Usage) {
        let max = |a: &mut u64, b: Option<u64>| *a = (*a).max(b.unwrap_or(0));
        max(&mut usage.input_tokens, self.input_tokens);
        max(&mut usage.output_tokens, self.output_tokens);
        max(
            &mut usage.cache_creation_input_tokens,
            self.cache_creation_input_tokens,
        );
        max(
            &mut usage.cache_read_input_tokens,
            self.cache_read_input_tokens,
        );
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
pub struct OpenAiUsageJson {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<CachedTokens>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct CachedTokens {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl OpenAiUsageJson {
    pub fn to_usage(self) -> Usage {
        let cached = self
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        Usage {
            input_tokens: self.prompt_tokens.saturating_sub(cached),
            output_tokens: self.completion_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
        }
    }
}

#[derive(Deserialize)]
struct AnthropicEvent<'a> {
    #[serde(rename = "type", default)]
    kind: Option<&'a str>,
    #[serde(default)]
    message: Option<AnthropicStartMessage>,
    #[serde(default)]
    usage: Option<UsageJson>,
    #[serde(borrow, default)]
    delta: Option<AnthropicDelta<'a>>,
    #[serde(default)]
    index: Option<u64>,
}

#[derive(Deserialize)]
struct AnthropicStartMessage {
    #[serde(default)]
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct AnthropicDelta<'a> {
    #[serde(borrow, default)]
    text: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<std::borrow::Cow<'a, str>>,
}

/// Usage tracking over an Anthropic event stream.
#[derive(Default)]
pub struct AnthropicUsage {
    usage: Usage,
    output_reported: bool,
    streamed_bytes: u64,
    /// How the streamed bytes count until the output is reported.
    counting: BytesPerToken,
    /// The content block started and not yet stopped, if any.
    open_block: Option<u64>,
}

impl AnthropicUsage {
    /// Counts streamed text at `counting` until the output is reported (metering).
    pub fn counting(mut self, counting: BytesPerToken) -> Self {
        self.counting = counting;
        self
    }

    pub fn observe(&mut self, event: &SseEvent) {
        let name = event.event.as_deref();
        if !matches!(
            name,
            None | Some("message_start")
                | Some("message_delta")
                | Some("content_block_delta")
                | Some("content_block_start")
                | Some("content_block_stop")
        ) {
            return;
        }
        let Ok(parsed) = serde_json::from_str::<AnthropicEvent<'_>>(&event.data) else {
            return;
        };
        match name.or(parsed.kind) {
            Some("message_start") => {
                if let Some(u) = parsed.message.and_then(|m| m.usage) {
                    let mut start = u;
                    // message_start's output count is a placeholder (usually 1).
                    start.output_tokens = None;
                    start.merge_into(&mut self.usage);
                }
            }
            Some("message_delta") => {
                if let Some(u) = parsed.usage {
                    if u.output_tokens.is_some() {
                        self.output_reported = true;
                    }
                    u.merge_into(&mut self.usage);
                }
            }
            Some("content_block_delta") => {
                if let Some(d) = parsed.delta {
                    let n = [d.text, d.partial_json, d.thinking]
                        .iter()
                        .flatten()
                        .map(|s| s.len())
                        .sum::<usize>();
                    self.streamed_bytes += n as u64;
                }
            }
            Some("content_block_start") => self.open_block = parsed.index,
            Some("content_block_stop") => self.open_block = None,
            _ => {}
        }
    }

    /// The usage so far: as reported, with the output counted from the streamed text
    /// until it is.
    pub fn usage(&self) -> Usage {
        let mut u = self.usage;
        if !self.output_reported {
            u.output_tokens = u
                .output_tokens
                .max(self.counting.tokens(self.streamed_bytes));
        }
        u
    }

    /// The streamed bytes and the output tokens reported for them, once reported.
    pub fn sample(&self) -> Option<(u64, u64)> {
        self.output_reported
            .then_some((self.streamed_bytes, self.usage.output_tokens))
    }

    /// The content block left open, which a stream ended early must stop.
    pub fn open_block(&self) -> Option<u64> {
        self.open_block
    }
}

#[derive(Deserialize)]
struct OpenAiChunk {
    #[serde(default)]
    usage: Option<OpenAiUsageJson>,
    #[serde(default)]
    choices: Vec<OpenAiChoice>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    created: Option<u64>,
}

#[derive(Deserialize)]
struct OpenAiChoice {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    delta: Option<OpenAiDelta>,
}

/// What every chunk of an OpenAI stream repeats, for chunks the gateway adds.
#[derive(Debug, Clone, Default)]
pub struct ChunkHead {
    pub id: String,
    pub model: String,
    pub created: u64,
}

#[derive(Deserialize)]
struct OpenAiDelta {
    #[serde(default)]
    content: Option<String>,
}

/// Usage tracking over an OpenAI chunk stream: the usage chunk when it comes, else the
/// streamed text as an estimate of the output.
#[derive(Default)]
pub struct OpenAiUsage {
    usage: Option<Usage>,
    streamed_bytes: u64,
    /// How the streamed bytes count until the usage chunk comes.
    counting: BytesPerToken,
    head: Option<ChunkHead>,
    /// The completions (`choices[].index`) seen.
    choices: std::collections::BTreeSet<u64>,
}

impl OpenAiUsage {
    /// Counts streamed text at `counting` until the usage comes (metering).
    pub fn counting(mut self, counting: BytesPerToken) -> Self {
        self.counting = counting;
        self
    }

    /// Observes one event; true when it is the usage-only chunk (`choices: []`).
    pub fn observe(&mut self, event: &SseEvent) -> bool {
        if event.data == "[DONE]" {
            return false;
        }
        let Ok(chunk) = serde_json::from_str::<OpenAiChunk>(&event.data) else {
            return false;
        };
        if self.head.is_none() {
            if let (Some(id), Some(model)) = (&chunk.id, &chunk.model) {
                self.head = Some(ChunkHead {
                    id: id.clone(),
                    model: model.clone(),
                    created: chunk.created.unwrap_or(0),
                });
            }
        }
        for c in &chunk.choices {
            self.choices.insert(c.index);
            if let Some(text) = c.delta.as_ref().and_then(|d| d.content.as_ref()) {
                self.streamed_bytes += text.len() as u64;
            }
        }
        match chunk.usage {
            Some(u) => {
                self.usage = Some(u.to_usage());
                chunk.choices.is_empty()
            }
            None => false,
        }
    }

    /// The usage reported, or the output counted from the streamed text until it is.
    pub fn usage(&self) -> Usage {
        self.usage.unwrap_or(Usage {
            output_tokens: self.counting.tokens(self.streamed_bytes),
            ..Usage::default()
        })
    }

    /// The streamed bytes and the output tokens reported for them, once reported.
    pub fn sample(&self) -> Option<(u64, u64)> {
        self.usage.map(|u| (self.streamed_bytes, u.output_tokens))
    }

    /// The stream's id, model and creation time, once a chunk named them.
    pub fn head(&self) -> Option<&ChunkHead> {
        self.head.as_ref()
    }

    /// The completions seen (at least the first).
    pub fn choices(&self) -> Vec<u64> {
        if self.choices.is_empty() {
            vec![0]
        } else {
            self.choices.iter().copied().collect()
        }
    }
}
