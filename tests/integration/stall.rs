//! A DynamoDB that stops answering (a proxy in front of DynamoDB Local that
//! holds calls): requests end in time with a 503, and a reply whose job was
//! submitted is recorded or its job cancelled, never left untracked.

use std::time::Duration;

use chat_service_dev::{
    bench::proxy::{DynamoProxy, Hold},
    runpod_local::{LocalRunPod, Settings},
};
use chat_shared::{app::dynamodb_config, http, runpod::RunPodClient, App};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::{self, error_code, read, token, Event};

struct Stalled {
    /// Reaches DynamoDB through the proxy.
    app: App<RunPodClient>,
    /// Reads the same table directly, asking RunPod nothing.
    direct: App<RunPodClient>,
    proxy: DynamoProxy,
    runpod: LocalRunPod,
}

impl Stalled {
    /// Jobs are held in progress; a send waits 0.3 s for its reply.
    async fn new(attempt_ms: &str, operation_ms: &str) -> Self {
        let runpod = LocalRunPod::new(Settings {
            api_key: Some("test-runpod-key".into()),
            hold: true,
            execution_time: Duration::ZERO,
            ..Settings::default()
        });
        let url = runpod.clone().spawn().await;
        let client = common::dynamo().await;
        let table = common::fresh_table(&client).await;
        let config = common::config_with(
            &table,
            &[
                ("SEND_WAIT_SECONDS", "0.3"),
                ("DYNAMODB_ATTEMPT_TIMEOUT_MS", attempt_ms),
                ("DYNAMODB_TIMEOUT_MS", operation_ms),
            ],
        );
        let local = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap();
        let (proxy, proxy_url) = DynamoProxy::start(local).await;
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let proxied = dynamodb_config(&aws, &config)
            .endpoint_url(proxy_url)
            .build();
        let proxied = aws_sdk_dynamodb::Client::from_conf(proxied);
        let model = RunPodClient::new(common::runpod_config(&url, &[])).unwrap();
        Self {
            app: App::new(config.clone(), proxied).with_model(model),
            direct: App::new(config, client).with_model(common::idle_model()),
            proxy,
            runpod,
        }
    }

    /// Holds the calls of `op` after `skip` more have passed.
    fn hold(&self, op: &str, skip: usize, count: usize) {
        let op = op.into();
        self.proxy.hold(Some(Hold { op, skip, count }));
    }

    async fn send(&self, text: &str) -> (u16, Value) {
        let body = json!({ "message": text }).to_string();
        let req = Event::send(&body, Some(token("alice"))).request();
        read(http::send_message(&self.app, req).await)
    }

    /// Alice's conversations as stored, read around the proxy.
    async fn stored(&self) -> Vec<Value> {
        let req = Event::list(Some(token("alice"))).request();
        let (status, list) = read(http::list_conversations(&self.direct, req).await);
        assert_eq!(status, 200, "{list}");
        let mut conversations = Vec::new();
        for c in list["conversations"].as_array().unwrap() {
            let id = c["id"].as_str().unwrap();
            let req = Event::get(id, Some(token("alice"))).request();
            let (status, body) = read(http::get_conversation(&self.direct, req).await);
            assert_eq!(status, 200, "{body}");
            conversations.push(body);
        }
        conversations
    }
}

#[tokio::test]
async fn a_table_that_does_not_answer_is_a_503_within_the_timeout() {
    let s = Stalled::new("200", "600").await;
    s.hold("*", 0, usize::MAX);
    let started = Instant::now();
    let req = Event::list(Some(token("alice"))).request();
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        http::list_conversations(&s.app, req),
    )
    .await
    .expect("the request must end, not hang with the table");
    let waited = started.elapsed();
    assert_eq!(resp.headers()["retry-after"], "1");
    let (status, body) = read(resp);
    assert_eq!(error_code(status, &body, 503), "unavailable");
    // The operation timeout (0.6 s) ended it, not the 20 s guard.
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");

    s.proxy.hold(None);
    let (status, body) = s.send("Are you back?").await;
    assert_eq!(status, 202, "the table answers again: {body}");
}

#[tokio::test]
async fn a_pending_reply_whose_write_stalls_once_is_recorded_by_the_retry() {
    let s = Stalled::new("300", "4000").await;
    // The first transaction stores the question; the second, recording
    // the pending reply, is held once and then retried by the SDK.
    s.hold("TransactWriteItems", 1, 1);
    let (status, body) = s.send("How do I organize patient files?").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(s.runpod.cancels(), 0);
    let stored = s.stored().await;
    assert_eq!(stored.len(), 1);
    let reply = &stored[0]["messages"][1];
    assert_eq!(reply["id"], body["message_id"]);
    assert_eq!(reply["status"], "pending");
}

#[tokio::test]
async fn a_pending_reply_that_cannot_be_recorded_has_its_job_cancelled() {
    let s = Stalled::new("200", "700").await;
    s.hold("TransactWriteItems", 1, usize::MAX);
    let (status, body) = s.send("How do I organize patient files?").await;
    assert_eq!(error_code(status, &body, 503), "unavailable");
    assert_eq!(
        s.runpod.cancels(),
        1,
        "a job whose reply is not recorded is cancelled"
    );
    // The question is kept; no reply was recorded.
    let stored = s.stored().await;
    let messages = stored[0]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["content"], "How do I organize patient files?");
}
