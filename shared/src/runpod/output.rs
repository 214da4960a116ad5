//! The shapes real RunPod workers return as a job's `output`, read into one
//! [`Completion`]. Anything else is an [`OutputError`], never a panic.

use serde_json::Value;

use crate::domain::{Completion, Usage, UsageSum};

/// A completed job's output that holds no usable reply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutputError {
    /// No output at all.
    #[error("the job completed without output")]
    Missing,
    /// A shape no known worker returns (described, shortened).
    #[error("the job's output has an unknown shape: {0}")]
    UnknownShape(String),
    /// A reply that is only white space.
    #[error("the model returned an empty reply")]
    Empty,
}

/// Accepts:
/// - a plain string;
/// - `{"text": "..."}` (or a list of strings under `text`);
/// - an OpenAI chat completion: `{"choices": [{"message": {"content": ...}}], "usage": {...}}`;
/// - the vLLM worker's lists: `[{"choices": [{"tokens": ["..."]}], "usage": {"input": N, "output": M}}]`
///   and `[{"choices": [{"message": {"content": ...}}], "usage": {...}}]`,
///   several entries (streamed chunks) concatenated.
pub fn parse_output(output: Option<&Value>) -> Result<Completion, OutputError> {
    let output = output
        .filter(|v| !v.is_null())
        .ok_or(OutputError::Missing)?;
    let (text, usage) = match output {
        Value::Array(entries) if !entries.is_empty() => {
            let mut text = String::new();
            let mut usage = UsageSum::default();
            for entry in entries {
                let (t, u) = parse_entry(entry)?;
                text.push_str(&t);
                usage.add(u);
            }
            (text, usage.total())
        }
        other => parse_entry(other)?,
    };
    if text.trim().is_empty() {
        return Err(OutputError::Empty);
    }
    Ok(Completion { text, usage })
}

/// One chunk of a streamed job (an entry of `GET stream`'s `stream`, its
/// `output`): its text, possibly empty, and the token counts it reports.
/// Every shape a whole output may take is a chunk shape, and so is an
/// OpenAI streaming delta (`{"choices": [{"delta": {"content": ...}}]}`).
pub fn parse_chunk(output: &Value) -> Result<(String, Option<Usage>), OutputError> {
    parse_entry(output)
}

fn parse_entry(entry: &Value) -> Result<(String, Option<Usage>), OutputError> {
    let unknown = || OutputError::UnknownShape(describe(entry));
    match entry {
        Value::String(s) => Ok((s.clone(), None)),
        Value::Object(obj) => {
            let usage = obj.get("usage").and_then(parse_usage);
            if let Some(choices) = obj.get("choices") {
                let first = choices.get(0).ok_or_else(unknown)?;
                return choice_text(first).map(|t| (t, usage)).ok_or_else(unknown);
            }
            if let Some(text) = obj.get("text") {
                return string_or_list(text).map(|t| (t, usage)).ok_or_else(unknown);
            }
            Err(unknown())
        }
        _ => Err(unknown()),
    }
}

fn choice_text(choice: &Value) -> Option<String> {
    if let Some(content) = choice.pointer("/message/content") {
        return content.as_str().map(str::to_owned);
    }
    if let Some(delta) = choice.get("delta") {
        // A streaming delta without content (the role, or the last one) is empty.
        return Some(
            delta
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        );
    }
    if let Some(tokens) = choice.get("tokens") {
        return string_or_list(tokens);
    }
    choice.get("text").and_then(string_or_list)
}

fn string_or_list(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| p.as_str())
            .collect::<Option<Vec<_>>>()
            .map(|p| p.concat()),
        _ => None,
    }
}

/// OpenAI's `prompt_tokens`/`completion_tokens`, the vLLM worker's
/// `input`/`output`, or `input_tokens`/`output_tokens`.
fn parse_usage(v: &Value) -> Option<Usage> {
    let pair = |a: &str, b: &str| Some((v.get(a)?.as_u64()?, v.get(b)?.as_u64()?));
    let (input_tokens, output_tokens) = pair("prompt_tokens", "completion_tokens")
        .or_else(|| pair("input", "output"))
        .or_else(|| pair("input_tokens", "output_tokens"))?;
    Some(Usage {
        input_tokens,
        output_tokens,
    })
}

/// A short description of a value's shape for the log: its keys and types,
/// not its text (which may be a patient's question echoed back).
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(a) => format!("array[{}]", a.first().map(describe).unwrap_or_default()),
        Value::Object(o) => format!(
            "object{{{}}}",
            o.keys().cloned().collect::<Vec<_>>().join(",")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Completion, OutputError> {
        parse_output(Some(&v))
    }

    #[test]
    fn chunks_of_every_shape_and_empty_ones() {
        let text = |v: Value| parse_chunk(&v).unwrap().0;
        assert_eq!(text(json!("Sort ")), "Sort ");
        assert_eq!(text(json!({"text": "by "})), "by ");
        assert_eq!(
            text(json!({"choices": [{"tokens": ["patient", "."]}]})),
            "patient."
        );
        assert_eq!(
            text(json!({"choices": [{"delta": {"content": "Hi"}}]})),
            "Hi"
        );
        assert_eq!(
            text(json!({"choices": [{"delta": {"role": "assistant"}}]})),
            ""
        );
        let (_, usage) = parse_chunk(
            &json!({"choices": [{"tokens": [""]}], "usage": {"input": 3, "output": 1}}),
        )
        .unwrap();
        assert_eq!(usage.unwrap().input_tokens, 3);
        assert!(parse_chunk(&json!(42)).is_err());
    }

    #[test]
    fn plain_string() {
        assert_eq!(parse(json!("Hello")).unwrap().text, "Hello");
    }

    #[test]
    fn text_object() {
        let c = parse(json!({"text": "Hi there"})).unwrap();
        assert_eq!(c.text, "Hi there");
        assert_eq!(c.usage, None);
        assert_eq!(
            parse(json!({"text": ["Hi", " there"]})).unwrap().text,
            "Hi there"
        );
    }

    #[test]
    fn openai_chat_completion() {
        let c = parse(json!({
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Use folders."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        }))
        .unwrap();
        assert_eq!(c.text, "Use folders.");
        assert_eq!(
            c.usage,
            Some(Usage {
                input_tokens: 12,
                output_tokens: 3
            })
        );
    }

    #[test]
    fn vllm_token_list() {
        let c = parse(json!([
            {"choices": [{"tokens": ["Sort ", "by ", "patient."]}], "usage": {"input": 20, "output": 5}}
        ]))
        .unwrap();
        assert_eq!(c.text, "Sort by patient.");
        assert_eq!(
            c.usage,
            Some(Usage {
                input_tokens: 20,
                output_tokens: 5
            })
        );
    }

    #[test]
    fn vllm_streamed_chunks_are_concatenated() {
        let c = parse(json!([
            {"choices": [{"tokens": ["Sort "]}], "usage": {"input": 20, "output": 1}},
            {"choices": [{"tokens": ["by date."]}], "usage": {"input": 0, "output": 2}}
        ]))
        .unwrap();
        assert_eq!(c.text, "Sort by date.");
        assert_eq!(c.usage.unwrap().output_tokens, 3);
    }

    #[test]
    fn vllm_message_list() {
        let c = parse(json!([
            {"choices": [{"message": {"role": "assistant", "content": "Label each file."}}],
             "usage": {"prompt_tokens": 7, "completion_tokens": 4}}
        ]))
        .unwrap();
        assert_eq!(c.text, "Label each file.");
        assert_eq!(c.usage.unwrap().input_tokens, 7);
    }

    #[test]
    fn completion_style_choice_text() {
        assert_eq!(
            parse(json!({"choices": [{"text": "ok"}]})).unwrap().text,
            "ok"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for v in [
            json!(42),
            json!(true),
            json!([]),
            json!({}),
            json!({"choices": []}),
            json!({"choices": [{"message": {"content": 5}}]}),
            json!({"choices": [{"tokens": [1, 2]}]}),
            json!([{"foo": "bar"}]),
            json!({"result": "text under an unknown key"}),
        ] {
            assert!(parse(v.clone()).is_err(), "{v} should be rejected");
        }
        assert_eq!(parse_output(None), Err(OutputError::Missing));
        assert_eq!(parse_output(Some(&Value::Null)), Err(OutputError::Missing));
    }

    #[test]
    fn empty_reply_is_an_error() {
        assert_eq!(parse(json!("  ")), Err(OutputError::Empty));
        assert_eq!(
            parse(json!({"choices": [{"tokens": []}]})),
            Err(OutputError::Empty)
        );
    }

    #[test]
    fn unknown_shapes_are_described_without_their_text() {
        let err = parse(json!({"secret_field": "patient name"})).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("secret_field"));
        assert!(!msg.contains("patient name"));
    }

    #[test]
    fn usage_that_overflows_when_added_is_dropped_not_wrapped() {
        let c = parse_output(Some(&json!([
            {"choices": [{"tokens": ["a"]}], "usage": {"input": u64::MAX, "output": 1}},
            {"choices": [{"tokens": ["b"]}], "usage": {"input": 1, "output": 1}},
            {"choices": [{"tokens": ["c"]}], "usage": {"input": 1, "output": 1}}
        ])))
        .unwrap();
        assert_eq!(c.text, "abc");
        assert_eq!(c.usage, None);
    }
}
