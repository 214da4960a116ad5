//! The job `input` sent to the worker, in the shape its model's
//! `input_format` names, and what a job can count.

use serde_json::{json, Value};

use crate::{
    chat::Prompt,
    config::InputFormat,
    domain::{
        Message, Role, TokenBounds, CHARS_PER_TOKEN, TEMPLATE_TOKENS_ONCE,
        TEMPLATE_TOKENS_PER_MESSAGE,
    },
};

/// The `input` of a job for `prompt`. Both formats carry
/// `sampling_params` (`max_tokens`, and `temperature` and `top_p` when the
/// conversation set them), which the vLLM worker reads in either
/// (worker-vllm `src/utils.py` `JobInput`: `sampling_params` beside
/// `messages` or `prompt`).
pub fn build_input(prompt: &Prompt<'_>) -> Value {
    let mut sampling = json!({"max_tokens": prompt.sampling.max_tokens});
    if let Some(t) = prompt.sampling.temperature {
        sampling["temperature"] = json!(t);
    }
    if let Some(p) = prompt.sampling.top_p {
        sampling["top_p"] = json!(p);
    }
    match prompt.model.input_format {
        InputFormat::Messages => {
            let system = prompt
                .instructions
                .map(|p| json!({"role": "system", "content": p}));
            let messages: Vec<Value> = system
                .into_iter()
                .chain(
                    prompt
                        .history
                        .iter()
                        .map(|m| json!({"role": m.role.as_str(), "content": m.content})),
                )
                .collect();
            json!({"messages": messages, "sampling_params": sampling})
        }
        InputFormat::Prompt => json!({
            "prompt": render_prompt(prompt.instructions, prompt.history),
            "sampling_params": sampling,
        }),
    }
}

/// What a job for `prompt` can count at most, and its prompt's estimate.
///
/// The prompt's bound is its bytes: byte-level BPE tokenizers (GPT-2's,
/// tiktoken's, Llama 3's, Qwen's) and SentencePiece with byte fallback
/// never make a token of less than one byte, so a text has at most as many
/// tokens as bytes; the template's own tokens are added. The reply's is
/// the job's `sampling_params.max_tokens`. The estimate is the quota's
/// usual one token per [`CHARS_PER_TOKEN`] characters.
pub fn token_bounds(prompt: &Prompt<'_>) -> TokenBounds {
    let texts = prompt
        .instructions
        .into_iter()
        .chain(prompt.history.iter().map(|m| m.content.as_str()));
    let (mut bytes, mut chars, mut count) = (0u64, 0u64, 0u64);
    for text in texts {
        bytes += text.len() as u64;
        chars += text.chars().count() as u64;
        count += 1;
    }
    let template = TEMPLATE_TOKENS_ONCE + count * TEMPLATE_TOKENS_PER_MESSAGE;
    TokenBounds {
        most: bytes + template + u64::from(prompt.sampling.max_tokens),
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
    use crate::{catalogue::ModelSpec, chat::Sampling, domain::ModelId};
    use chrono::Utc;

    fn model(format: InputFormat) -> ModelSpec {
        ModelSpec {
            id: ModelId::parse("m").unwrap(),
            name: "M".into(),
            description: String::new(),
            endpoint_id: "ep".into(),
            input_format: format,
            context_tokens: 4096,
            max_output_tokens: 256,
            default: true,
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

    fn input(format: InputFormat, system: Option<&str>, sampling: Sampling) -> Value {
        let (model, history) = (model(format), history());
        build_input(&Prompt {
            model: &model,
            instructions: system,
            sampling,
            history: &history,
        })
    }

    const PLAIN: Sampling = Sampling {
        max_tokens: 256,
        temperature: None,
        top_p: None,
    };

    #[test]
    fn messages_format_is_what_the_vllm_worker_takes() {
        let v = input(InputFormat::Messages, Some("Be brief."), PLAIN);
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
        let v = input(InputFormat::Messages, None, PLAIN);
        assert_eq!(v["messages"][0]["role"], "user");
    }

    #[test]
    fn prompt_format_renders_a_transcript_with_its_sampling() {
        let sampling = Sampling {
            max_tokens: 64,
            temperature: Some(0.2),
            top_p: Some(0.9),
        };
        let v = input(InputFormat::Prompt, Some("Be brief."), sampling);
        assert_eq!(
            v,
            json!({
                "prompt": "Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: How do I organize patient files?\n\nAssistant:",
                "sampling_params": {"max_tokens": 64, "temperature": 0.2, "top_p": 0.9}
            })
        );
    }
}
