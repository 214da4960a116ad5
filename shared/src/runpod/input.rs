//! The job `input` sent to the worker, in the shape `RUNPOD_INPUT_FORMAT` names.

use serde_json::{json, Value};

use crate::{
    config::{InputFormat, RunPodConfig},
    domain::{Message, Role},
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
