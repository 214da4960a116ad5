//! Issue 25: a catalogue of two models on two endpoints of the local RunPod
//! endpoint, conversations with their own settings, against DynamoDB Local.
//! What each job asked is read from what the local endpoint received.

use std::time::Duration;

use crate::common::{self, error_code, read, token, Event};
use chat_service_dev::runpod_local::{LocalRunPod, Settings};
use chat_shared::{http, runpod::RunPodClient, App};
use serde_json::{json, Value};

/// Two models: `small` (the default, messages format) and `large` (prompt format).
const CATALOGUE: &str = r#"[
  {"id": "small", "name": "Small", "description": "Fast answers", "endpoint_id": "ep-small",
   "input_format": "messages", "context_tokens": 2048, "max_output_tokens": 256, "default": true},
  {"id": "large", "name": "Large", "description": "Harder questions", "endpoint_id": "ep-large",
   "input_format": "prompt", "context_tokens": 4096, "max_output_tokens": 1024}
]"#;

const SYSTEM_PROMPT: &str = "Deployment prompt.";

struct Stack {
    app: App<RunPodClient>,
    runpod: LocalRunPod,
}

impl Stack {
    async fn new(runpod: Settings, extra: &[(&str, &str)]) -> Self {
        let runpod = LocalRunPod::new(Settings {
            api_key: Some("test-runpod-key".into()),
            // Only the catalogue's endpoints, as RunPod serves only those that exist.
            endpoint_ids: Some(vec!["ep-small".into(), "ep-large".into()]),
            ..runpod
        });
        let url = runpod.clone().spawn().await;
        let client = common::dynamo().await;
        let table = common::fresh_table(&client).await;
        let vars = [
            ("RUNPOD_MODELS", CATALOGUE),
            ("SYSTEM_PROMPT", SYSTEM_PROMPT),
        ];
        let vars: Vec<_> = vars.iter().chain(extra).copied().collect();
        let config = common::config_with(&table, &vars);
        let model = RunPodClient::new(common::runpod_config(&url, &[])).unwrap();
        Self {
            app: App::new(config, client).with_model(model),
            runpod,
        }
    }

    async fn send(&self, body: Value) -> (u16, Value) {
        let event = Event::send(&body.to_string(), Some(token("alice")));
        read(http::send_message(&self.app, event.request()).await)
    }

    async fn patch(&self, id: &str, body: Value) -> (u16, Value) {
        let event = Event::rename(id, &body.to_string(), Some(token("alice")));
        read(http::rename_conversation(&self.app, event.request()).await)
    }

    async fn get(&self, id: &str) -> Value {
        let event = Event::get(id, Some(token("alice")));
        let (status, body) = read(http::get_conversation(&self.app, event.request()).await);
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The endpoint and input of the newest job.
    fn last_job(&self) -> (String, Value) {
        self.runpod.submissions().pop().expect("a job")
    }
}

/// The messages a job's input holds, whatever its format (the system
/// message and the prompt's preamble not counted).
fn turns(input: &Value) -> usize {
    match input.get("messages") {
        Some(messages) => messages
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] != "system")
            .count(),
        None => {
            let prompt = input["prompt"].as_str().unwrap();
            prompt.matches("User: ").count() + prompt.matches("Assistant: ").count()
        }
    }
}

#[tokio::test]
async fn the_catalogue_is_listed_without_its_endpoints() {
    let s = Stack::new(Settings::default(), &[]).await;
    let (status, body) =
        read(http::list_models(&s.app, Event::models(Some(token("alice"))).request()).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["models"][0],
        json!({"id": "small", "name": "Small", "description": "Fast answers",
               "context_tokens": 2048, "max_output_tokens": 256, "default": true})
    );
    assert_eq!(body["models"][1]["id"], "large");
    assert_eq!(body["models"][1]["default"], false);
    assert!(
        !body.to_string().contains("ep-"),
        "an endpoint id leaked: {body}"
    );
    let (status, body) = read(http::list_models(&s.app, Event::models(None).request()).await);
    assert_eq!(error_code(status, &body, 401), "unauthorized");
}

#[tokio::test]
async fn each_conversation_runs_on_its_models_endpoint_with_its_settings() {
    let s = Stack::new(Settings::default(), &[]).await;
    // A conversation on the large model, with its own instructions and sampling.
    let settings = json!({"model": "large", "instructions": "Answer as a practice manager.",
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 100});
    let (status, first) = s
        .send(json!({"message": "How do I organize patient files?", "settings": settings}))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["model"], "large");
    let (endpoint, input) = s.last_job();
    assert_eq!(endpoint, "ep-large");
    let prompt = input["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with("Answer as a practice manager.\n\nUser: How do I"),
        "{prompt}"
    );
    let sampling = json!({"max_tokens": 100, "temperature": 0.2, "top_p": 0.9});
    assert_eq!(input["sampling_params"], sampling);

    // Another, on the default model with the deployment's prompt.
    let (status, other) = s.send(json!({"message": "Hello"})).await;
    assert_eq!((status, &other["model"]), (200, &json!("small")), "{other}");
    let (endpoint, input) = s.last_job();
    assert_eq!(endpoint, "ep-small");
    assert_eq!(
        input["messages"][0],
        json!({"role": "system", "content": SYSTEM_PROMPT})
    );
    assert_eq!(input["sampling_params"], json!({"max_tokens": 256}));

    // The first conversation's settings stay for its next turn.
    let id = first["conversation_id"].as_str().unwrap();
    let (status, _) = s
        .send(json!({"message": "And how long must I keep them?", "conversation_id": id}))
        .await;
    assert_eq!(status, 200);
    let (endpoint, input) = s.last_job();
    assert_eq!(
        (endpoint.as_str(), &input["sampling_params"]),
        ("ep-large", &sampling)
    );
    assert!(input["prompt"]
        .as_str()
        .unwrap()
        .starts_with("Answer as a practice manager."));

    // A PATCH moves it to the small model and resets the temperature; the rest stays.
    let (status, summary) = s
        .patch(
            id,
            json!({"settings": {"model": "small", "temperature": null}}),
        )
        .await;
    assert_eq!(
        (status, &summary["model"]),
        (200, &json!("small")),
        "{summary}"
    );
    let conversation = s.get(id).await;
    assert_eq!(
        conversation["settings"],
        json!({"model": "small", "instructions": "Answer as a practice manager.",
               "temperature": null, "top_p": 0.9, "max_tokens": 100})
    );
    let messages = conversation["messages"].as_array().unwrap();
    let models: Vec<&Value> = messages.iter().map(|m| &m["model"]).collect();
    assert_eq!(
        models,
        [&Value::Null, &json!("large"), &Value::Null, &json!("large")]
    );
    assert!(
        messages[1]["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{conversation}"
    );

    let (status, reply) = s
        .send(json!({"message": "Thanks", "conversation_id": id}))
        .await;
    assert_eq!((status, &reply["model"]), (200, &json!("small")), "{reply}");
    let (endpoint, input) = s.last_job();
    assert_eq!(endpoint, "ep-small");
    assert_eq!(
        input["messages"][0],
        json!({"role": "system", "content": "Answer as a practice manager."})
    );
    assert_eq!(
        input["sampling_params"],
        json!({"max_tokens": 100, "top_p": 0.9})
    );
    // The list names each conversation's model.
    let (_, list) =
        read(http::list_conversations(&s.app, Event::list(Some(token("alice"))).request()).await);
    let listed: Vec<&Value> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["model"])
        .collect();
    assert_eq!(listed, [&json!("small"), &json!("small")]);
}

/// A reply left pending is collected at the endpoint its job runs on: the
/// local endpoint does not know a job at another one.
#[tokio::test]
async fn a_pending_reply_is_collected_at_its_models_endpoint() {
    let held = Settings {
        hold: true,
        ..Settings::default()
    };
    let s = Stack::new(held, &[("SEND_WAIT_SECONDS", "0.3")]).await;
    let (status, pending) = s
        .send(json!({"message": "Hi", "settings": {"model": "large"}}))
        .await;
    assert_eq!(status, 202, "{pending}");
    s.runpod.release(None);
    let id = pending["conversation_id"].as_str().unwrap();
    let mut reply = Value::Null;
    for _ in 0..50 {
        reply = s.get(id).await["messages"][1].clone();
        if reply["status"] != "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (&reply["status"], &reply["model"]),
        (&json!("complete"), &json!("large")),
        "{reply}"
    );
    // The development responder echoes the prompt: the job that ran is this one.
    assert!(
        reply["content"].as_str().unwrap().contains("User: Hi"),
        "{reply}"
    );
}

#[tokio::test]
async fn refused_settings_store_nothing_and_start_no_job() {
    let s = Stack::new(Settings::default(), &[]).await;
    let refusals = [
        (json!({"model": "huge"}), "unknown_model", "huge"),
        (json!({"temprature": 0.5}), "invalid_settings", "temprature"),
        (
            json!({"temperature": 2.5}),
            "invalid_settings",
            "temperature",
        ),
        (json!({"top_p": 0}), "invalid_settings", "top_p"),
        (json!({"max_tokens": 257}), "invalid_settings", "max_tokens"),
        (
            json!({"max_tokens": 2000, "model": "large"}),
            "invalid_settings",
            "max_tokens",
        ),
        (
            json!({"instructions": "x".repeat(8_001)}),
            "invalid_settings",
            "instructions",
        ),
        (json!("fast"), "invalid_settings", "settings"),
    ];
    for (settings, code, named) in &refusals {
        let (status, body) = s.send(json!({"message": "Hi", "settings": settings})).await;
        assert_eq!(error_code(status, &body, 422), *code, "{settings}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(named), "{settings}: {message}");
    }
    let (_, list) =
        read(http::list_conversations(&s.app, Event::list(Some(token("alice"))).request()).await);
    assert_eq!(
        list["conversations"],
        json!([]),
        "a refused send stored a conversation"
    );
    assert_eq!(s.runpod.submitted(), 0, "a refused send started a job");

    // On an existing conversation: refused before its message is stored.
    let (_, first) = s.send(json!({"message": "Hi"})).await;
    let id = first["conversation_id"].as_str().unwrap();
    let before = s.get(id).await;
    for (settings, code, _) in &refusals {
        let body = json!({"message": "Again", "conversation_id": id, "settings": settings});
        let (status, answer) = s.send(body).await;
        assert_eq!(error_code(status, &answer, 422), *code);
        let (status, answer) = s.patch(id, json!({"settings": settings})).await;
        assert_eq!(error_code(status, &answer, 422), *code, "PATCH {settings}");
    }
    assert_eq!(
        s.get(id).await,
        before,
        "a refusal changed the conversation"
    );
    assert_eq!(s.runpod.submitted(), 1);
    // max_tokens is checked against the stored model: 1000 is too many for
    // small, not for large.
    let (status, _) = s.patch(id, json!({"settings": {"model": "large"}})).await;
    assert_eq!(status, 200);
    let (status, body) = s.patch(id, json!({"settings": {"max_tokens": 1000}})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.patch(id, json!({"settings": {"model": "small"}})).await;
    assert_eq!(error_code(status, &body, 422), "invalid_settings");
    // Unknown top-level fields are 400, as everywhere; a PATCH naming nothing too.
    let (status, body) = s.patch(id, json!({"setings": {}})).await;
    assert_eq!(error_code(status, &body, 400), "invalid_request");
    let (status, body) = s.patch(id, json!({})).await;
    assert_eq!(error_code(status, &body, 400), "invalid_request");
}

/// Each model gets as much of the conversation as its context leaves room
/// for, estimated as the quota does (a token per four characters, 16 per
/// message): a question here is 766 tokens, a development reply 82. Small's
/// 2 048 less 256 for the reply, 21 for the instructions and 64 for the
/// template leave 1 707: the newest three messages (an assistant turn cannot
/// open the history). Large's 4 096 less 1 024 leave 2 987: five.
#[tokio::test]
async fn the_history_is_cut_to_each_models_budget() {
    let s = Stack::new(Settings::default(), &[]).await;
    let long = "x".repeat(3_000);
    let (_, first) = s.send(json!({"message": long})).await;
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let (status, body) = s
            .send(json!({"message": long, "conversation_id": id}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Seven messages were there for the fourth job; small took the newest three.
    let (endpoint, input) = s.last_job();
    assert_eq!((endpoint.as_str(), turns(&input)), ("ep-small", 3));
    let (status, _) = s.patch(&id, json!({"settings": {"model": "large"}})).await;
    assert_eq!(status, 200);
    let (status, _) = s
        .send(json!({"message": long, "conversation_id": id}))
        .await;
    assert_eq!(status, 200);
    let (endpoint, input) = s.last_job();
    assert_eq!((endpoint.as_str(), turns(&input)), ("ep-large", 5));
}
