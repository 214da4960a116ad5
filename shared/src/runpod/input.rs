//! The job `input` sent to the worker, in the shape `RUNPOD_INPUT_FORMAT` names.

use serde_json::{json, Value};

use crate::{
    config::{InputFormat, RunPodConfig},
    domain::{Message, Role, TokenBounds, CHARS_PER_TOKEN},
};

/// `history` is the conversation so far, oldest first, ending with the
/// user's new message; it arrives already bounded by the use case.
pub fn build_input(config: &RunPodConfig, history: &[Message]) -> Value {
    match config.input_format {
        InputFormat::Messages => {
            let system = config
                .system_prompt
                .as_deref()
                .map(|p| json!({"role": "system", "content": p}));
            let messages: Vec<Value> = system
                .into_iter()
                .chain(
                    history
                        .iter()
                        .map(|m| json!({"role": m.role.as_str(), "content": m.content})),
                )
                .collect();
            json!({
                "messages": messages,
                "sampling_params": {"max_tokens": config.max_tokens},
            })
        }
        InputFormat::Prompt => {
            json!({ "prompt": render_prompt(config.system_prompt.as_deref(), history) })
        }
    }
}

/// Template tokens a chat template adds around each message (role
/// headers, end-of-turn markers: Llama 3's adds 4 or 5, ChatML's 5), with room.
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 16;
/// Tokens a template adds once (begin-of-text, the assistant's opening,
/// a default system header such as Llama 3.1's dated one).
const TEMPLATE_TOKENS_ONCE: u64 = 64;

/// What a job for `history` can count at most, and its prompt's estimate.
///
/// The prompt's bound is its bytes: byte-level BPE tokenizers (GPT-2's,
/// tiktoken's, Llama 3's, Qwen's) and SentencePiece with byte fallback
/// never make a token of less than one byte, so a text has at most as many
/// tokens as bytes; the template's own tokens are added. The reply's is
/// `RUNPOD_MAX_TOKENS`, which the `messages` input sends as
/// `sampling_params.max_tokens` (a `prompt` worker must be configured to
/// the same limit). The estimate is the quota's usual one character in
/// [`CHARS_PER_TOKEN`].
pub fn token_bounds(config: &RunPodConfig, history: &[Message]) -> TokenBounds {
    let texts = config
        .system_prompt
        .iter()
        .map(String::as_str)
        .chain(history.iter().map(|m| m.content.as_str()));
    let (mut bytes, mut chars, mut count) = (0u64, 0u64, 0u64);
    for text in texts {
        bytes += text.len() as u64;
        chars += text.chars().count() as u64;
        count += 1;
    }
    let template = TEMPLATE_TOKENS_ONCE + count * TEMPLATE_TOKENS_PER_MESSAGE;
    TokenBounds {
        most: bytes + template + u64::from(config.max_tokens),
        prompt: chars.div_ceil(CHARS_PER_TOKEN),
    }
}

/// The conversation as a plain transcript that ends with the assistant's turn.
fn render_prompt(system: Option<&str>, history: &[Message]) -> String {
    let mut out = String::new();
    if let Some(system) = system {
        out.push_str(system);
        out.push_str("\n\n");
    }
    for m in history {
        let speaker = match m.role {
            Role::User => "User",
            Role::Assistant => "Assistant",
        };
        out.push_str(speaker);
        out.push_str(": ");
        out.push_str(&m.content);
        out.push_str("\n\n");
    }
    out.push_str("Assistant:");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use chrono::Utc;
    use std::time::Duration;

    fn config(format: InputFormat, system: Option<&str>) -> RunPodConfig {
        RunPodConfig {
            base_url: "http://127.0.0.1:1".into(),
            endpoint_id: "ep".into(),
            api_key: Secret::new("k"),
            input_format: format,
            system_prompt: system.map(str::to_owned),
            max_tokens: 256,
            request_timeout: Duration::from_secs(1),
            max_retries: 0,
            retry_base_delay: Duration::from_millis(1),
            poll_initial_delay: Duration::from_millis(1),
            poll_max_delay: Duration::from_millis(1),
            max_response_bytes: 1 << 20,
        }
    }

    fn history() -> Vec<Message> {
        vec![
            Message::new(Role::User, "Hi".into(), Utc::now()),
            Message::new(Role::Assistant, "Hello!".into(), Utc::now()),
            Message::new(
                Role::User,
                "How do I organize patient files?".into(),
                Utc::now(),
            ),
        ]
    }

    #[test]
    fn messages_format_is_what_the_vllm_worker_takes() {
        let v = build_input(
            &config(InputFormat::Messages, Some("Be brief.")),
            &history(),
        );
        assert_eq!(
            v,
            json!({
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "How do I organize patient files?"}
                ],
                "sampling_params": {"max_tokens": 256}
            })
        );
        let v = build_input(&config(InputFormat::Messages, None), &history());
        assert_eq!(v["messages"][0]["role"], "user");
    }

    #[test]
    fn prompt_format_renders_a_transcript() {
        let v = build_input(&config(InputFormat::Prompt, Some("Be brief.")), &history());
        assert_eq!(
            v,
            json!({"prompt": "Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: How do I organize patient files?\n\nAssistant:"})
        );
    }
}
