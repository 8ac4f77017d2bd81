//! The adapters against recorded streams of both dialects.

use super::*;

#[test]
fn a_metered_stream_forwards_whole_events_and_cuts_as_a_length_stop() {
    let mut a = AnthropicPassthrough::for_metering(BytesPerToken::UNLEARNED);
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"abcdefgh\"}}\n\nevent: content_block_delta\ndata: {\"type\":";
    // The last event is incomplete: held back until its end comes.
    let out = a.on_chunk(&Bytes::from(start));
    let text = String::from_utf8(out.to_vec()).expect("utf8");
    assert!(text.ends_with("\"abcdefgh\"}}\n\n"), "{text}");
    assert_eq!(text.matches("event: ").count(), 3);
    // Metering counts two bytes a token until the output is reported (before it
    // learned the model's counting); an unmetered stream four.
    assert_eq!(a.usage().output_tokens, 4);
    assert_eq!(a.usage().input_tokens, 10);
    assert_eq!(a.sample(), None);
    let tail = String::from_utf8(a.cut().expect("cuttable").to_vec()).expect("utf8");
    let events: Vec<&str> = tail
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| f.lines().next().unwrap_or(""))
        .collect();
    assert_eq!(
        events,
        [
            "event: content_block_stop",
            "event: message_delta",
            "event: message_stop"
        ]
    );
    assert!(tail.contains("\"stop_reason\":\"max_tokens\""), "{tail}");
    // The client is told the output it is charged for.
    assert!(tail.contains("\"output_tokens\":4"), "{tail}");
    // An unmetered pass-through forwards bytes as they come and cannot cut.
    let mut plain = AnthropicPassthrough::default();
    assert_eq!(plain.on_chunk(&Bytes::from(start)), Bytes::from(start));
    assert!(plain.cut().is_none());
    assert_eq!(plain.usage().output_tokens, 2);
}

const OPENAI_STREAM: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello there\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n",
    "data: [DONE]\n\n",
);

fn run(adapter: &mut dyn Adapter, input: &str, split: usize) -> String {
    let mut out = Vec::new();
    for part in [&input[..split], &input[split..]] {
        out.extend_from_slice(&adapter.on_chunk(&Bytes::copy_from_slice(part.as_bytes())));
    }
    out.extend_from_slice(&adapter.finish());
    String::from_utf8(out).unwrap_or_default()
}

#[test]
fn openai_passthrough_strips_only_the_usage_chunk_it_added() {
    let want = Usage {
        input_tokens: 10,
        output_tokens: 3,
        cache_read_input_tokens: 2,
        ..Usage::default()
    };
    for split in [0, 7, 80, OPENAI_STREAM.len()] {
        let mut keep = OpenAiPassthrough::new(false);
        assert_eq!(run(&mut keep, OPENAI_STREAM, split), OPENAI_STREAM);
        assert_eq!(keep.usage(), want);
        let mut strip = OpenAiPassthrough::new(true);
        let out = run(&mut strip, OPENAI_STREAM, split);
        assert!(
            !out.contains("usage")
                && out.contains("Hello there")
                && out.ends_with("data: [DONE]\n\n"),
            "{out}"
        );
        assert_eq!(strip.usage(), want);
    }
}

#[test]
fn cut_streams_estimate_output_and_errors_end_anthropic_streams() {
    let cut = &OPENAI_STREAM[..OPENAI_STREAM.find("data: {\"choices\":[],").unwrap_or(0)];
    let mut t = OpenAiToAnthropic::new("m", "msg_1");
    let out = run(&mut t, cut, 10);
    assert!(
        out.contains("Hello there") && out.contains("event: message_stop"),
        "{out}"
    );
    assert_eq!(t.usage().output_tokens, 3, "11 streamed bytes ≈ 3 tokens");

    let failing = "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
    let mut t = OpenAiToAnthropic::new("m", "msg_2");
    let first_event = &OPENAI_STREAM[..OPENAI_STREAM.find("\n\n").unwrap_or(0) + 2];
    let out = run(&mut t, &format!("{first_event}{failing}"), 0);
    assert!(
        out.contains("event: error") && out.contains("boom") && !out.contains("message_stop"),
        "{out}"
    );
}
