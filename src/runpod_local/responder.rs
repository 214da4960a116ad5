//! A job's answer: the development echo, or an OpenAI-compatible server's.

use serde_json::{json, Value};

use super::settings::{Responder, DEV_REPLY_PREFIX};

impl Responder {
    /// The job's output for its `input` (`messages` or `prompt`), in a
    /// shape one of RunPod's workers produces.
    pub(super) async fn answer(
        &self,
        http: &reqwest::Client,
        input: &Value,
    ) -> Result<Value, String> {
        match self {
            Responder::Development => development(input),
            Responder::OpenAi {
                base_url,
                model,
                api_key,
            } => {
                let mut body = json!({"model": model, "messages": messages(input)?});
                if let Some(max) = input.pointer("/sampling_params/max_tokens") {
                    body["max_tokens"] = max.clone();
                }
                let mut req = http
                    .post(format!("{base_url}/chat/completions"))
                    .json(&body);
                if let Some(key) = api_key {
                    req = req.bearer_auth(key);
                }
                let resp = req.send().await.map_err(|e| format!("model server: {e}"))?;
                let status = resp.status();
                let value: Value = resp
                    .json()
                    .await
                    .map_err(|e| format!("model server answer: {e}"))?;
                if !status.is_success() {
                    return Err(format!("model server answered {status}"));
                }
                Ok(value)
            }
        }
    }
}

/// The last user message echoed behind [`DEV_REPLY_PREFIX`], in the
/// official vLLM worker's output shape.
fn development(input: &Value) -> Result<Value, String> {
    let last_user = input["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .or_else(|| input["prompt"].as_str())
        .ok_or("input has neither messages nor prompt")?;
    let echoed: String = last_user.chars().take(200).collect();
    let text = format!("{DEV_REPLY_PREFIX} You said: {echoed}");
    let words = text.split_whitespace().count() as u64;
    Ok(json!([{
        "choices": [{"tokens": [text]}],
        "usage": {"input": last_user.split_whitespace().count(), "output": words}
    }]))
}

/// The chat messages of `input`; a bare `prompt` becomes one user message.
fn messages(input: &Value) -> Result<Value, String> {
    match (&input["messages"], input["prompt"].as_str()) {
        (Value::Array(m), _) => Ok(Value::Array(m.clone())),
        (_, Some(p)) => Ok(json!([{"role": "user", "content": p}])),
        _ => Err("input has neither messages nor prompt".into()),
    }
}
