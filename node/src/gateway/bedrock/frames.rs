//! AWS event-stream frames (`application/vnd.amazon.eventstream`), as Bedrock streams
//! an answer: each frame an `event` whose `chunk` payload is `{"bytes": base64 of one
//! Anthropic streaming event}`, or an `exception` (`:exception-type`, `{"message"}`).
//! `to_sse` turns a provider's frames into the Anthropic SSE the relay reads; `Encoder`
//! does the reverse for the Bedrock front door.

use aws_smithy_eventstream::frame::{write_message_to, DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// A stream of frames as a stream of Anthropic SSE events; a frame that does not
/// decode ends it with an error.
pub fn to_sse<S>(frames: S) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
{
    let state = (frames, MessageFrameDecoder::new(), BytesMut::new(), false);
    futures_util::stream::unfold(
        state,
        |(mut frames, mut decoder, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                let mut out = Vec::new();
                loop {
                    match decoder.decode_frame(&mut buf) {
                        Ok(DecodedFrame::Complete(message)) => sse_of(&message, &mut out),
                        Ok(DecodedFrame::Incomplete) => break,
                        Err(e) => {
                            let e = std::io::Error::other(format!(
                                "a Bedrock stream frame is invalid: {e}"
                            ));
                            return Some((Err(e), (frames, decoder, buf, true)));
                        }
                    }
                }
                if !out.is_empty() {
                    return Some((Ok(Bytes::from(out)), (frames, decoder, buf, false)));
                }
                match frames.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (frames, decoder, buf, true))),
                    None if buf.is_empty() => return None,
                    None => {
                        let e = std::io::Error::other("the Bedrock stream ended inside a frame");
                        return Some((Err(e), (frames, decoder, buf, true)));
                    }
                }
            }
        },
    )
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| h.value().as_string().ok())
        .map(|s| s.as_str())
}

#[derive(serde::Deserialize)]
struct Chunk {
    bytes: String,
}

#[derive(serde::Deserialize)]
struct Exception {
    #[serde(default, alias = "Message")]
    message: String,
}

/// One frame as SSE: a chunk's event, or an exception as an Anthropic `error` event.
fn sse_of(message: &Message, out: &mut Vec<u8>) {
    let kind = header(message, ":message-type").unwrap_or("event");
    if kind == "event" && header(message, ":event-type") == Some("chunk") {
        let event = serde_json::from_slice::<Chunk>(message.payload())
            .ok()
            .and_then(|c| {
                base64::engine::general_purpose::STANDARD
                    .decode(c.bytes)
                    .ok()
            });
        if let Some(event) = event {
            let name = serde_json::from_slice::<serde_json::Value>(&event)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
            let data = String::from_utf8_lossy(&event);
            crate::gateway::sse::frame(name.as_deref(), &data, out);
        }
        return;
    }
    if kind == "event" {
        return;
    }
    // An exception (`:exception-type`) or an error (`:error-code`, `:error-message`).
    let code = header(message, ":exception-type")
        .or_else(|| header(message, ":error-code"))
        .unwrap_or("internalServerException");
    let text = header(message, ":error-message")
        .map(str::to_owned)
        .or_else(|| {
            serde_json::from_slice::<Exception>(message.payload())
                .ok()
                .map(|e| e.message)
        })
        .unwrap_or_default();
    let kind = match code {
        "throttlingException" | "serviceUnavailableException" => "overloaded_error",
        "validationException" => "invalid_request_error",
        _ => "api_error",
    };
    let error = serde_json::json!({"type": "error", "error": {"type": kind, "message": format!("Bedrock {code}: {text}")}});
    crate::gateway::sse::frame(Some("error"), &error.to_string(), out);
}

/// A stream of Anthropic SSE events as a stream of frames: each event a chunk, an
/// `error` event an exception (the Bedrock front door's streams).
pub fn from_sse<S>(events: S) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
{
    let state = (events, crate::gateway::sse::SseParser::new(), false);
    futures_util::stream::unfold(state, |(mut events, mut parser, done)| async move {
        if done {
            return None;
        }
        loop {
            let (parsed, end) = match events.next().await {
                Some(Ok(chunk)) => (parser.push(&chunk), false),
                Some(Err(e)) => return Some((Err(e), (events, parser, true))),
                None => (parser.finish().into_iter().collect(), true),
            };
            let mut out = Vec::new();
            for event in parsed {
                out.extend_from_slice(&frame_of(&event));
            }
            if !out.is_empty() || end {
                return Some((Ok(Bytes::from(out)), (events, parser, end)));
            }
        }
    })
}

/// One SSE event as a frame.
fn frame_of(event: &crate::gateway::sse::SseEvent) -> Bytes {
    if event.event.as_deref() != Some("error") {
        return chunk(event.data.as_bytes());
    }
    let error: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
    let message = error["error"]["message"]
        .as_str()
        .unwrap_or("the stream failed");
    let kind = match error["error"]["type"].as_str() {
        Some("overloaded_error" | "rate_limit_error") => "throttlingException",
        Some("invalid_request_error") => "validationException",
        _ => "internalServerException",
    };
    exception(kind, message)
}

/// A chunk frame carrying one Anthropic streaming event (its JSON).
pub fn chunk(event: &[u8]) -> Bytes {
    let payload =
        serde_json::json!({"bytes": base64::engine::general_purpose::STANDARD.encode(event)});
    frame(
        vec![
            Header::new(":event-type", HeaderValue::String("chunk".into())),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            Header::new(":message-type", HeaderValue::String("event".into())),
        ],
        payload.to_string(),
    )
}

/// An exception frame (`throttlingException`, `internalServerException`, ...).
pub fn exception(kind: &str, message: &str) -> Bytes {
    frame(
        vec![
            Header::new(
                ":exception-type",
                HeaderValue::String(kind.to_owned().into()),
            ),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            Header::new(":message-type", HeaderValue::String("exception".into())),
        ],
        serde_json::json!({"message": message}).to_string(),
    )
}

fn frame(headers: Vec<Header>, payload: String) -> Bytes {
    let mut out = Vec::new();
    // Writing to a Vec fails only past the format's own limits (16 MiB).
    let _ = write_message_to(&Message::new_from_parts(headers, payload), &mut out);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_become_sse_however_they_are_cut() {
        let events = [
            br#"{"type":"message_start","message":{"usage":{"input_tokens":3}}}"#.as_slice(),
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
            br#"{"type":"message_stop"}"#,
        ];
        let mut all = Vec::new();
        for e in events {
            all.extend_from_slice(&chunk(e));
        }
        all.extend_from_slice(&exception("throttlingException", "slow down"));
        for cut in [1, 7, 64, all.len()] {
            let pieces: Vec<Result<Bytes, std::io::Error>> = all
                .chunks(cut)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let sse: Vec<u8> = to_sse(futures_util::stream::iter(pieces))
                .map(|r| r.expect("decodes").to_vec())
                .concat()
                .await;
            let text = String::from_utf8(sse).expect("utf-8");
            assert!(
                text.starts_with("event: message_start\ndata: {\"type\":\"message_start\""),
                "{text}"
            );
            assert!(text.contains("event: content_block_delta\ndata: "));
            assert!(text.contains("event: message_stop\n"));
            assert!(text.contains("event: error\ndata: {\"error\":{\"message\":\"Bedrock throttlingException: slow down\",\"type\":\"overloaded_error\"}"), "{text}");
        }
        // And back: the SSE as frames again, the error an exception.
        let sse: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(
            b"event: message_start\ndata: {\"type\":\"message_start\"}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n",
        ))];
        let frames: Vec<u8> = from_sse(futures_util::stream::iter(sse))
            .map(|r| r.expect("encodes").to_vec())
            .concat()
            .await;
        let mut buf = BytesMut::from(&frames[..]);
        let mut decoder = MessageFrameDecoder::new();
        let mut seen = Vec::new();
        while let Ok(DecodedFrame::Complete(m)) = decoder.decode_frame(&mut buf) {
            seen.push((
                header(&m, ":message-type").map(str::to_owned),
                header(&m, ":exception-type").map(str::to_owned),
            ));
        }
        assert_eq!(
            seen,
            [
                (Some("event".into()), None),
                (Some("exception".into()), Some("throttlingException".into()))
            ]
        );

        // Cut inside a frame at the end: an error, not silence.
        let half = Ok(Bytes::copy_from_slice(&all[..10]));
        let mut s = Box::pin(to_sse(futures_util::stream::iter(vec![half])));
        assert!(s.next().await.expect("an item").is_err());
    }
}
