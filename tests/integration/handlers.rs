//! The three handlers end to end: API Gateway v2 events through the real
//! handler code, to DynamoDB Local and a wiremock RunPod.

use crate::common;
use crate::common::{error_code, read, token, Event};
use chat_service_dev::DEV_JWT_SECRET;
use chat_shared::refusal::Refusal;
use chat_shared::{
    auth::issue_token,
    http,
    runpod::RunPodClient,
    store::{memory::MemoryStore, DynamoStore, Store},
    App,
};
use serde_json::{json, Value};
use wiremock::{
    matchers::{method, path},
    Mock, MockServer, ResponseTemplate,
};

/// The handlers over a store (DynamoDB Local unless a test says the
/// in-memory one suffices: refusals that no DynamoDB condition decides)
/// and a wiremock RunPod.
struct Harness<S = DynamoStore> {
    app: App<RunPodClient, S>,
    runpod: MockServer,
}

impl Harness {
    async fn new() -> Self {
        Self::with(&[]).await
    }

    async fn with(extra: &[(&str, &str)]) -> Self {
        let client = common::dynamo().await;
        let table = common::fresh_table(&client).await;
        let runpod = MockServer::start().await;
        let model = RunPodClient::new(common::runpod_config(&runpod.uri(), &[])).unwrap();
        Self {
            app: App::new(common::config_with(&table, extra), client).with_model(model),
            runpod,
        }
    }
}

impl Harness<MemoryStore> {
    /// On the in-memory store: milliseconds, no DynamoDB Local.
    async fn in_memory(extra: &[(&str, &str)]) -> Self {
        let runpod = MockServer::start().await;
        let model = RunPodClient::new(common::runpod_config(&runpod.uri(), &[])).unwrap();
        let config = common::config_with("in-memory", extra);
        Self {
            app: App::with_store(config, MemoryStore::default()).with_model(model),
            runpod,
        }
    }
}

impl<S: Store> Harness<S> {
    /// RunPod queues every job as `job-1`, whose status is `final_job`; a
    /// `runsync` answers with it (the job ended within the wait).
    async fn jobs_end_as(&self, final_job: Value) {
        Mock::given(method("POST"))
            .and(path("/test-endpoint/runsync"))
            .respond_with(ResponseTemplate::new(200).set_body_json(final_job.clone()))
            .mount(&self.runpod)
            .await;
        Mock::given(method("POST"))
            .and(path("/test-endpoint/run"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": "job-1", "status": "IN_QUEUE"})),
            )
            .mount(&self.runpod)
            .await;
        Mock::given(method("GET"))
            .and(path("/test-endpoint/status/job-1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(final_job))
            .mount(&self.runpod)
            .await;
    }

    /// Every job completes with `reply`.
    async fn replies(&self, reply: &str) {
        self.jobs_end_as(json!({
            "id": "job-1", "status": "COMPLETED",
            "output": {"choices": [{"message": {"content": reply}}], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
        }))
        .await;
    }

    async fn send(&self, event: Event) -> (u16, Value) {
        read(http::send_message(&self.app, event.request()).await)
    }

    async fn list(&self, event: Event) -> (u16, Value) {
        read(http::list_conversations(&self.app, event.request()).await)
    }

    async fn get(&self, event: Event) -> (u16, Value) {
        read(http::get_conversation(&self.app, event.request()).await)
    }

    async fn rename(&self, event: Event) -> (u16, Value) {
        read(http::rename_conversation(&self.app, event.request()).await)
    }

    async fn job_inputs(&self) -> Vec<Value> {
        self.runpod
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path().ends_with("/run") || r.url.path().ends_with("/runsync"))
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["input"].clone())
            .collect()
    }
}

fn is_utc_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

#[tokio::test]
async fn send_creates_a_conversation_that_list_and_get_show() {
    let h = Harness::new().await;
    h.replies("Sort them by patient, then by date.").await;
    let alice = token("alice");

    let (status, body) = h
        .send(Event::send(
            r#"{"message": "How do I organize patient files?"}"#,
            Some(alice.clone()),
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Sort them by patient, then by date.");
    assert!(is_utc_rfc3339(&body["timestamp"]), "{body}");
    let id = body["conversation_id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let usage = json!({"input_tokens": 5, "output_tokens": 2, "prompt_tokens": 5,
        "completion_tokens": 2, "total_tokens": 7});
    assert_eq!(body["usage"], usage);
    assert_eq!(body["model"], "default");

    let (status, list) = h.list(Event::list(Some(alice.clone()))).await;
    assert_eq!(status, 200, "{list}");
    let convs = list["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0]["id"], id.as_str());
    assert_eq!(convs[0]["title"], "How do I organize patient files?");
    assert_eq!(
        convs[0]["last_message"],
        "Sort them by patient, then by date."
    );
    assert!(is_utc_rfc3339(&convs[0]["updated_at"]));
    assert_eq!(convs[0]["model"], "default");

    let (status, conv) = h.get(Event::get(&id, Some(alice))).await;
    assert_eq!(status, 200, "{conv}");
    assert_eq!(conv["id"], id.as_str());
    assert_eq!(conv["title"], "How do I organize patient files?");
    let messages = conv["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "How do I organize patient files?");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(
        messages[1]["content"],
        "Sort them by patient, then by date."
    );
    assert!(messages.iter().all(|m| is_utc_rfc3339(&m["timestamp"])));
    // The reply names its model and keeps its usage; the question has neither.
    assert_eq!(
        (&messages[1]["model"], &messages[1]["usage"]),
        (&json!("default"), &usage)
    );
    assert!(messages[0].get("model").is_none() && messages[0].get("usage").is_none());
    let defaults = json!({"model": "default", "instructions": null, "temperature": null,
        "top_p": null, "max_tokens": null});
    assert_eq!(conv["settings"], defaults);
}

#[tokio::test]
async fn send_to_an_existing_conversation_sends_its_history() {
    let h = Harness::new().await;
    h.replies("ok").await;
    let alice = token("alice");
    let (_, first) = h
        .send(Event::send(
            r#"{"message": "first question"}"#,
            Some(alice.clone()),
        ))
        .await;
    let id = first["conversation_id"].as_str().unwrap();

    let body = json!({"message": "second question", "conversation_id": id}).to_string();
    let (status, second) = h.send(Event::send(&body, Some(alice.clone()))).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["conversation_id"], id);

    let inputs = h.job_inputs().await;
    assert_eq!(
        inputs[1]["messages"],
        json!([
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second question"}
        ])
    );
    let (_, conv) = h.get(Event::get(id, Some(alice.clone()))).await;
    assert_eq!(conv["messages"].as_array().unwrap().len(), 4);
    let (_, list) = h.list(Event::list(Some(alice))).await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn other_users_conversations_are_not_found() {
    let h = Harness::in_memory(&[]).await;
    h.replies("private answer").await;
    let (_, created) = h
        .send(Event::send(
            r#"{"message": "my secret"}"#,
            Some(token("alice")),
        ))
        .await;
    let id = created["conversation_id"].as_str().unwrap();
    let bob = token("bob");

    let (status, body) = h.get(Event::get(id, Some(bob.clone()))).await;
    assert_eq!(error_code(status, &body, 404), "not_found");

    let send = json!({"message": "let me in", "conversation_id": id}).to_string();
    let (status, body) = h.send(Event::send(&send, Some(bob.clone()))).await;
    assert_eq!(error_code(status, &body, 404), "not_found");

    let (_, list) = h.list(Event::list(Some(bob))).await;
    assert_eq!(list["conversations"], json!([]));

    let unknown = json!({"message": "hi", "conversation_id": uuid::Uuid::new_v4()}).to_string();
    let (status, body) = h.send(Event::send(&unknown, Some(token("alice")))).await;
    assert_eq!(error_code(status, &body, 404), "not_found");
    let (status, body) = h.get(Event::get("not-a-uuid", Some(token("alice")))).await;
    assert_eq!(error_code(status, &body, 404), "not_found");
    // Only the one successful send reached the model.
    assert_eq!(h.job_inputs().await.len(), 1);
}

/// Found by Schemathesis: bodies that are not UTF-8. API Gateway delivers
/// them base64-encoded; every route with a body answers 400 invalid_json.
#[tokio::test]
async fn bodies_that_are_not_utf8_are_400_invalid_json() {
    let h = Harness::in_memory(&[]).await;
    let bytes = b"{\"message\": \"a\xffb\"}";
    let id = uuid::Uuid::new_v4().to_string();
    let send = h.send(Event::send("", Some(token("alice"))).bytes_body(bytes));
    let rename = h.rename(Event::rename(&id, "", Some(token("alice"))).bytes_body(bytes));
    for (status, resp) in [send.await, rename.await] {
        assert_eq!(error_code(status, &resp, 400), "invalid_json");
    }
    assert!(h.job_inputs().await.is_empty());
}

/// Issue 13: a body over 64 KB is refused before it is parsed.
#[tokio::test]
async fn bodies_over_64_kb_are_413() {
    let h = Harness::in_memory(&[("MAX_MESSAGE_CHARS", "100000")]).await;
    h.replies("unused").await;
    let big = json!({"message": "x".repeat(64 * 1024)}).to_string();
    let (status, resp) = h.send(Event::send(&big, Some(token("alice")))).await;
    assert_eq!(error_code(status, &resp, 413), "payload_too_large");
    let id = uuid::Uuid::new_v4().to_string();
    let title = json!({"title": "t".repeat(64 * 1024)}).to_string();
    let (status, resp) = h
        .rename(Event::rename(&id, &title, Some(token("alice"))))
        .await;
    assert_eq!(error_code(status, &resp, 413), "payload_too_large");
    assert!(h.job_inputs().await.is_empty());
    // Just under the limit is read as usual.
    let fits = json!({"message": "x".repeat(60 * 1024)}).to_string();
    let (status, _) = h.send(Event::send(&fits, Some(token("alice")))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_bodies_are_400_and_bad_messages_422() {
    let h = Harness::in_memory(&[("MAX_MESSAGE_CHARS", "20")]).await;
    h.replies("unused").await;
    let t = || Some(token("alice"));
    for (body, code) in [
        ("{not json", "invalid_json"),
        ("", "invalid_json"),
        (r#"{"message": 5}"#, "invalid_request"),
        (r#"{"text": "hi"}"#, "invalid_request"),
        (r#"["hi"]"#, "invalid_request"),
        (
            r#"{"message": "hi", "conversation_id": 7}"#,
            "invalid_request",
        ),
        (
            r#"{"message": "hi", "conversation_id": "abc"}"#,
            "invalid_conversation_id",
        ),
    ] {
        let (status, resp) = h.send(Event::send(body, t())).await;
        assert_eq!(error_code(status, &resp, 400), code, "for body {body:?}");
    }
    for (body, code) in [
        (r#"{"message": ""}"#, "empty_message"),
        (r#"{"message": "  \n\t "}"#, "empty_message"),
        (
            r#"{"message": "this message is longer than twenty"}"#,
            "message_too_long",
        ),
    ] {
        let (status, resp) = h.send(Event::send(body, t())).await;
        assert_eq!(error_code(status, &resp, 422), code, "for body {body:?}");
    }
    let (status, _) = h
        .send(Event::send(r#"{"message": "exactly twenty chars"}"#, t()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(h.job_inputs().await.len(), 1);
}

/// A typo in a field's name is refused, naming the field, rather than read
/// as a send to a new conversation (a new GPU job) or a rename to nothing.
#[tokio::test]
async fn unknown_fields_are_400_naming_the_field() {
    let h = Harness::in_memory(&[]).await;
    h.replies("unused").await;
    let t = || Some(token("alice"));
    let body = r#"{"message": "hi", "conversationId": "3f1c2b9e-8a7d-4c55-9e21-6d0b7a4e5f10"}"#;
    let (status, resp) = h.send(Event::send(body, t())).await;
    assert_eq!(error_code(status, &resp, 400), "invalid_request");
    let message = resp["error"]["message"].as_str().unwrap();
    assert!(message.contains("conversationId"), "{message}");
    assert!(h.job_inputs().await.is_empty(), "no job started");
    let (_, list) = h.list(Event::list(t())).await;
    assert_eq!(
        list["conversations"],
        serde_json::json!([]),
        "nothing stored"
    );

    let (status, sent) = h.send(Event::send(r#"{"message": "hi"}"#, t())).await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["conversation_id"].as_str().unwrap();
    let rename = Event::rename(id, r#"{"title": "Files", "tilte": "x"}"#, t());
    let (status, resp) = read(http::rename_conversation(&h.app, rename.request()).await);
    assert_eq!(error_code(status, &resp, 400), "invalid_request");
    assert!(
        resp["error"]["message"].as_str().unwrap().contains("tilte"),
        "{resp}"
    );
}

#[tokio::test]
async fn bad_tokens_are_401_with_a_bearer_challenge() {
    let h = Harness::in_memory(&[]).await;
    let expired = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let exp = jsonwebtoken::get_current_timestamp() - 3600;
        encode(
            &Header::default(),
            &json!({"sub": "alice", "exp": exp}),
            &EncodingKey::from_secret(DEV_JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let wrong_secret = issue_token(
        "some-other-secret-some-other-secret",
        "alice",
        600,
        None,
        None,
    );
    for t in [
        None,
        Some("garbage".to_owned()),
        Some(expired),
        Some(wrong_secret),
    ] {
        for resp in [
            http::send_message(
                &h.app,
                Event::send(r#"{"message":"hi"}"#, t.clone()).request(),
            )
            .await,
            http::list_conversations(&h.app, Event::list(t.clone()).request()).await,
            http::get_conversation(
                &h.app,
                Event::get(&uuid::Uuid::new_v4().to_string(), t.clone()).request(),
            )
            .await,
        ] {
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            let (status, body) = read(resp);
            assert_eq!(error_code(status, &body, 401), "unauthorized");
            assert!(challenge.is_some_and(|c| c.starts_with("Bearer")));
        }
    }
}

#[tokio::test]
async fn a_failing_model_is_502_and_the_users_message_is_kept() {
    let h = Harness::new().await;
    h.jobs_end_as(json!({"id": "job-1", "status": "FAILED", "error": "Traceback: model.py line 3 secret internals"}))
        .await;
    let alice = token("alice");
    let (status, body) = h
        .send(Event::send(
            r#"{"message": "Will this be lost?"}"#,
            Some(alice.clone()),
        ))
        .await;
    assert_eq!(error_code(status, &body, 502), "model_error");
    assert!(!body.to_string().contains("Traceback"), "{body}");

    let (_, list) = h.list(Event::list(Some(alice.clone()))).await;
    let conv = &list["conversations"][0];
    assert_eq!(conv["last_message"], "Will this be lost?");
    let (_, read_back) = h
        .get(Event::get(conv["id"].as_str().unwrap(), Some(alice)))
        .await;
    assert_eq!(
        read_back["messages"],
        json!([{
            "id": read_back["messages"][0]["id"], "role": "user",
            "content": "Will this be lost?", "timestamp": read_back["messages"][0]["timestamp"],
        "status": "complete", "parent_id": null, "sibling_ids": [read_back["messages"][0]["id"]]
        }])
    );
    // The failed send released its claim: the conversation takes the next send.
    let again = json!({"message": "Again?", "conversation_id": conv["id"]}).to_string();
    let (status, body) = h.send(Event::send(&again, Some(token("alice")))).await;
    assert_eq!(error_code(status, &body, 502), "model_error", "not 409");
}

#[tokio::test]
async fn garbage_from_the_model_is_502() {
    let h = Harness::new().await;
    h.jobs_end_as(json!({"id": "job-1", "status": "COMPLETED", "output": {"weird": 1}}))
        .await;
    let (status, body) = h
        .send(Event::send(r#"{"message": "hi"}"#, Some(token("alice"))))
        .await;
    assert_eq!(error_code(status, &body, 502), "model_error");
}

#[tokio::test]
async fn a_job_that_times_out_at_runpod_is_504() {
    let h = Harness::new().await;
    h.jobs_end_as(json!({"id": "job-1", "status": "TIMED_OUT"}))
        .await;
    let (status, body) = h
        .send(Event::send(
            r#"{"message": "hello?"}"#,
            Some(token("alice")),
        ))
        .await;
    assert_eq!(error_code(status, &body, 504), "model_timeout");
}

#[tokio::test]
async fn storage_failures_are_opaque_500s() {
    let client = common::dynamo().await;
    let runpod = MockServer::start().await;
    let model = RunPodClient::new(common::runpod_config(&runpod.uri(), &[])).unwrap();
    let app = App::new(common::config("no-such-table"), client).with_model(model);
    let (status, body) =
        read(http::list_conversations(&app, Event::list(Some(token("alice"))).request()).await);
    assert_eq!(error_code(status, &body, 500), "internal_error");
    let text = body.to_string();
    assert!(
        !text.contains("no-such-table") && !text.contains("DynamoDB") && !text.contains("Resource"),
        "{text}"
    );
    let (status, _) = read(
        http::send_message(
            &app,
            Event::send(r#"{"message":"hi"}"#, Some(token("alice"))).request(),
        )
        .await,
    );
    assert_eq!(status, 500);
}

#[tokio::test]
async fn list_pages_and_limits() {
    let h = Harness::new().await;
    h.replies("ok").await;
    let alice = token("alice");
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, b) = h
            .send(Event::send(
                &json!({"message": format!("question {i}")}).to_string(),
                Some(alice.clone()),
            ))
            .await;
        ids.push(b["conversation_id"].as_str().unwrap().to_owned());
    }
    ids.reverse(); // newest first
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut e = Event::list(Some(alice.clone())).query("limit", "2");
        if let Some(c) = &cursor {
            e = e.query("cursor", c);
        }
        let (status, page) = h.list(e).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    for bad in ["0", "-1", "abc", "101"] {
        let (status, body) = h
            .list(Event::list(Some(alice.clone())).query("limit", bad))
            .await;
        assert_eq!(error_code(status, &body, 400), "invalid_limit");
    }
    let (status, body) = h
        .list(Event::list(Some(alice.clone())).query("cursor", "forged.cursor"))
        .await;
    assert_eq!(error_code(status, &body, 400), "invalid_cursor");
    // Alice's cursor is useless to Bob.
    let (_, page) = h.list(Event::list(Some(alice)).query("limit", "1")).await;
    let c = page["next_cursor"].as_str().unwrap();
    let (status, body) = h
        .list(Event::list(Some(token("bob"))).query("cursor", c))
        .await;
    assert_eq!(error_code(status, &body, 400), "invalid_cursor");
}

/// Issue 13: a reply DynamoDB cannot store (an item over 400 KB, here with
/// MAX_REPLY_CHARS raised past it) never breaks the conversation: the send
/// answers 502 and frees it; one found after the wait ends failed too, and
/// reads answer.
#[tokio::test]
async fn a_reply_too_large_to_store_fails_cleanly() {
    let huge = json!({"id": "job-1", "status": "COMPLETED", "output": "x".repeat(450_000)});
    let h = Harness::with(&[("MAX_REPLY_CHARS", "1000000")]).await;
    h.jobs_end_as(huge.clone()).await;
    let t = || Some(token("alice"));
    let (status, body) = h
        .send(Event::send(r#"{"message": "Tell me everything"}"#, t()))
        .await;
    assert_eq!(error_code(status, &body, 502), "model_error");
    let (_, list) = h.list(Event::list(t())).await;
    let id = list["conversations"][0]["id"].as_str().unwrap().to_owned();

    // The same reply arriving after the send gave up waiting.
    let pending = Harness::with(&[
        ("MAX_REPLY_CHARS", "1000000"),
        ("SEND_WAIT_SECONDS", "0.01"),
    ])
    .await;
    pending.jobs_end_as(huge).await;
    let (status, body) = pending
        .send(Event::send(r#"{"message": "Tell me everything"}"#, t()))
        .await;
    // The send's look after its pending write finds the job final and the
    // reply unstorable: it answers that failure (a 202 is only ever pending).
    assert_eq!(error_code(status, &body, 502), "model_error");
    let (_, list) = pending.list(Event::list(t())).await;
    let conversation = list["conversations"][0]["id"].as_str().unwrap();
    for _ in 0..2 {
        let (status, read) = pending.get(Event::get(conversation, t())).await;
        assert_eq!(status, 200, "{read}");
        let reply = &read["messages"][1];
        assert_eq!(reply["status"], "failed", "{reply}");
        assert_eq!(reply["error"], "the reply could not be stored");
    }
    // The first conversation took no harm either.
    let (status, _) = h.get(Event::get(&id, t())).await;
    assert_eq!(status, 200);
}

/// A daily limit of 0 means no sends at all, not one.
#[tokio::test]
async fn a_daily_limit_of_zero_admits_no_send() {
    for limit in ["USER_DAILY_MESSAGE_LIMIT", "USER_DAILY_TOKEN_LIMIT"] {
        let h = Harness::in_memory(&[(limit, "0")]).await;
        h.replies("Sorted by patient.").await;
        let event = Event::send(r#"{"message": "How?"}"#, Some(token("alice")));
        let (status, body) = read(http::send_message(&h.app, event.request()).await);
        assert_eq!(error_code(status, &body, 429), "quota_exceeded", "{limit}");
        assert!(h.job_inputs().await.is_empty(), "{limit}: no job");
        let (_, list) = h.list(Event::list(Some(token("alice")))).await;
        assert_eq!(list["conversations"], serde_json::json!([]), "{limit}");
    }
}

/// Issue 13: a user over the daily message limit gets 429 with Retry-After
/// until midnight UTC, nothing is stored or submitted, other users go on,
/// and `GET /api/chat/usage` reports the day.
#[tokio::test]
async fn sends_over_the_daily_limit_are_429_and_usage_reports_the_day() {
    let h = Harness::with(&[("USER_DAILY_MESSAGE_LIMIT", "2")]).await;
    h.replies("Sorted by patient.").await;
    let t = |u: &str| Some(token(u));
    let send = |u: &str| {
        let event = Event::send(r#"{"message": "How?"}"#, t(u));
        http::send_message(&h.app, event.request())
    };
    assert_eq!(send("alice").await.status(), 200);
    assert_eq!(send("alice").await.status(), 200);
    let refused = send("alice").await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    let (status, body) = read(refused);
    assert_eq!(error_code(status, &body, 429), "quota_exceeded");
    assert_eq!(
        h.job_inputs().await.len(),
        2,
        "the third send reached no model"
    );
    let (_, list) = h.list(Event::list(t("alice"))).await;
    assert_eq!(
        list["conversations"].as_array().unwrap().len(),
        2,
        "nothing stored"
    );
    assert_eq!(
        send("bob").await.status(),
        200,
        "other users are unaffected"
    );

    let (status, usage) = read(http::get_usage(&h.app, Event::usage(t("alice")).request()).await);
    assert_eq!(status, 200);
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(usage["day"], today.as_str());
    assert_eq!(usage["messages"], 2);
    assert_eq!(usage["message_limit"], 2);
    assert_eq!(usage["token_limit"], serde_json::Value::Null);
    // The worker reported 5 + 2 tokens for each reply.
    assert_eq!(usage["tokens"], 14);
    assert!(usage["resets_at"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00.000Z"));
}

async fn usage(h: &Harness, user: &str) -> Value {
    read(http::get_usage(&h.app, Event::usage(Some(token(user))).request()).await).1
}

/// Issue 23: parallel sends cannot pass the token limit together. Each
/// admitted send holds the most its reply can count until it settles, so
/// forty sends at once to new conversations (their replies pending) admit
/// only as many as the limit has room for; settled replies give the room
/// back, and the day ends at most one reply past the limit.
#[tokio::test]
async fn parallel_sends_reserve_their_most_and_cannot_pass_the_token_limit_together() {
    let limit = 3_000u64;
    let h = Harness::with(&[
        ("SEND_WAIT_SECONDS", "0.01"),
        ("USER_DAILY_TOKEN_LIMIT", "3000"),
    ])
    .await;
    h.jobs_end_as(json!({"id": "job-1", "status": "IN_PROGRESS"}))
        .await;
    let t = || Some(token("alice"));
    let sends = (0..40).map(|_| h.send(Event::send(r#"{"message": "How?"}"#, t())));
    let answers = futures::future::join_all(sends).await;
    let admitted = answers.iter().filter(|(s, _)| *s == 202).count() as u64;
    let refused = answers.iter().filter(|(s, _)| *s == 429).count() as u64;
    assert_eq!(admitted + refused, 40, "{answers:?}");
    let day = usage(&h, "alice").await;
    let reserved = day["reserved_tokens"].as_u64().unwrap();
    assert_eq!(day["tokens"], 0, "{day}");
    assert_eq!(reserved % admitted, 0, "{day}");
    // Each holds the prompt's bound and RUNPOD_MAX_TOKENS (1024).
    let each = reserved / admitted;
    assert!(each > 1024, "{day}");
    assert_eq!(
        admitted,
        limit.div_ceil(each),
        "admitted while held < limit: {day}"
    );
    assert!(admitted < 40);

    // The replies finish (7 tokens each, as the worker reports) and are
    // read: each settles to its real count and lets its reservation go.
    h.runpod.reset().await;
    h.replies("Sorted by patient.").await;
    let (_, list) = h.list(Event::list(t()).query("limit", "100")).await;
    for c in list["conversations"].as_array().unwrap() {
        let (status, _) = h.get(Event::get(c["id"].as_str().unwrap(), t())).await;
        assert_eq!(status, 200);
    }
    let day = usage(&h, "alice").await;
    assert_eq!(day["tokens"], 7 * admitted, "{day}");
    assert_eq!(day["reserved_tokens"], 0, "{day}");
    // Room again: a send goes, and the day stays within one reply of the limit.
    let (status, body) = h.send(Event::send(r#"{"message": "And now?"}"#, t())).await;
    assert_eq!(status, 200, "{body}");
    let tokens = usage(&h, "alice").await["tokens"].as_u64().unwrap();
    assert!(tokens <= limit + each, "{tokens}");
}

/// Issue 23: a stop does not dodge the count. A stopped reply counts its
/// prompt (32 characters: 8 tokens by the estimate) and lets its
/// reservation go, in the write that stores it cancelled; a second stop
/// counts nothing more.
#[tokio::test]
async fn a_stopped_reply_counts_its_prompt_once_and_frees_its_reservation() {
    let h = Harness::with(&[
        ("SEND_WAIT_SECONDS", "0.01"),
        ("USER_DAILY_TOKEN_LIMIT", "100000"),
    ])
    .await;
    h.jobs_end_as(json!({"id": "job-1", "status": "IN_PROGRESS"}))
        .await;
    let body = r#"{"message": "How do I organize patient files?"}"#;
    let (status, sent) = h.send(Event::send(body, Some(token("alice")))).await;
    assert_eq!(status, 202, "{sent}");
    let held = usage(&h, "alice").await;
    assert!(held["reserved_tokens"].as_u64().unwrap() > 1024, "{held}");
    let alice = chat_shared::domain::UserId::parse("alice").unwrap();
    let id = chat_shared::domain::ConversationId::parse(sent["conversation_id"].as_str().unwrap())
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    h.app.chat.stop(&alice, id, deadline).await.unwrap();
    let day = usage(&h, "alice").await;
    assert_eq!(
        (day["tokens"].as_u64(), day["reserved_tokens"].as_u64()),
        (Some(8), Some(0)),
        "{day}"
    );
    assert!(h.app.chat.stop(&alice, id, deadline).await.is_err());
    assert_eq!(usage(&h, "alice").await["tokens"], 8);
}

/// Issue 23: a job that fails lets its reservation go and counts nothing.
#[tokio::test]
async fn a_failed_reply_lets_its_reservation_go() {
    let h = Harness::with(&[("USER_DAILY_TOKEN_LIMIT", "3000")]).await;
    h.jobs_end_as(json!({"id": "job-1", "status": "FAILED", "error": "boom"}))
        .await;
    let (status, body) = h
        .send(Event::send(r#"{"message": "How?"}"#, Some(token("alice"))))
        .await;
    assert_eq!(error_code(status, &body, 502), "model_error");
    let usage = usage(&h, "alice").await;
    assert_eq!(
        (usage["tokens"].as_u64(), usage["reserved_tokens"].as_u64()),
        (Some(0), Some(0)),
        "{usage}"
    );
}

/// Issue 23: one user cannot hold every instance by opening replies in new
/// conversations: past USER_MAX_CONCURRENT_GENERATIONS a send is 429
/// `too_many_generations`, stores nothing and starts no job; other users go
/// on, and a reply that settles (here read complete) frees its place.
#[tokio::test]
async fn a_user_past_the_generation_cap_is_429_until_a_reply_settles() {
    let h = Harness::with(&[
        ("SEND_WAIT_SECONDS", "0.01"),
        ("USER_MAX_CONCURRENT_GENERATIONS", "2"),
    ])
    .await;
    h.jobs_end_as(json!({"id": "job-1", "status": "IN_PROGRESS"}))
        .await;
    let send = |user: &str| h.send(Event::send(r#"{"message": "How?"}"#, Some(token(user))));
    assert_eq!(send("alice").await.0, 202);
    assert_eq!(send("alice").await.0, 202);
    let refused = http::send_message(
        &h.app,
        Event::send(r#"{"message": "How?"}"#, Some(token("alice"))).request(),
    )
    .await;
    assert_eq!(refused.headers()["retry-after"], "5");
    let (status, body) = read(refused);
    assert_eq!(error_code(status, &body, 429), "too_many_generations");
    assert_eq!(h.job_inputs().await.len(), 2, "no job for the refused send");
    let (_, list) = h.list(Event::list(Some(token("alice")))).await;
    assert_eq!(
        list["conversations"].as_array().unwrap().len(),
        2,
        "nothing stored"
    );
    assert_eq!(send("bob").await.0, 202, "other users are unaffected");

    h.runpod.reset().await;
    h.replies("Sorted by patient.").await;
    let first = list["conversations"][0]["id"].as_str().unwrap();
    let (status, read_back) = h.get(Event::get(first, Some(token("alice")))).await;
    assert_eq!(
        (status, &read_back["messages"][1]["status"]),
        (200, &json!("complete"))
    );
    assert_eq!(
        send("alice").await.0,
        200,
        "the settled reply freed its place"
    );
}

/// Deleting a conversation whose reply is pending lets go of what the
/// reply held: its reservation and its place under the generation cap
/// (nothing else will settle it), so the next send is admitted at once.
#[tokio::test]
async fn deleting_a_conversation_with_a_pending_reply_frees_its_reservation_and_place() {
    let h = Harness::with(&[
        ("SEND_WAIT_SECONDS", "0.01"),
        ("USER_DAILY_TOKEN_LIMIT", "100000"),
        ("USER_MAX_CONCURRENT_GENERATIONS", "1"),
    ])
    .await;
    h.jobs_end_as(json!({"id": "job-1", "status": "IN_PROGRESS"}))
        .await;
    let send = || h.send(Event::send(r#"{"message": "How?"}"#, Some(token("alice"))));
    let (status, sent) = send().await;
    assert_eq!(status, 202, "{sent}");
    let (status, body) = send().await;
    assert_eq!(error_code(status, &body, 429), "too_many_generations");
    let id = sent["conversation_id"].as_str().unwrap();
    let deleted =
        http::delete_conversation(&h.app, Event::delete(id, Some(token("alice"))).request()).await;
    assert_eq!(deleted.status(), 204);
    let day = usage(&h, "alice").await;
    assert_eq!(
        (day["tokens"].as_u64(), day["reserved_tokens"].as_u64()),
        (Some(0), Some(0)),
        "{day}"
    );
    assert_eq!(send().await.0, 202, "the deleted reply's place is free");
}

/// The cap's entries of sends that died before settling are cleared by the
/// next send they would refuse, against DynamoDB Local's real conditions.
#[tokio::test]
async fn a_generation_whose_send_died_is_cleared_by_the_send_it_would_refuse() {
    use chat_shared::{
        domain::{Conversation, Message, Role, Title, UserId},
        store::{prelude::*, GenerationCap, Quota, StoreError},
    };
    let h = Harness::new().await;
    let store = h.app.chat.store();
    let alice = UserId::parse("alice").unwrap();
    let now = chrono::Utc::now();
    let quota = |stale_before| Quota {
        day: now.date_naive(),
        message_limit: None,
        token_limit: None,
        reserve: 0,
        generations: Some(GenerationCap {
            max: 1,
            stale_before,
        }),
    };
    let alice = &alice;
    let start = |q: Quota| async move {
        let first = Message::new(Role::User, "How?".into(), chrono::Utc::now());
        let title = Title::from_stored("t".into());
        let claim = chat_shared::domain::Claim {
            reply: chat_shared::domain::MessageId::new(),
            until: chrono::Utc::now() + chrono::Duration::seconds(60),
        };
        let conversation = Conversation::started_with(title, &first).claimed(&claim);
        store
            .start_conversation(alice, &conversation, &first, &q)
            .await
    };
    let an_hour_ago = now - chrono::Duration::hours(1);
    start(quota(an_hour_ago)).await.unwrap();
    // The first send never settles: the next is refused while its entry is young…
    let refused = start(quota(an_hour_ago)).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Refused(Refusal::TooManyGenerations))
        ),
        "{refused:?}"
    );
    // …and admitted once it is older than any send can live.
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    start(quota(later)).await.unwrap();
    assert!(matches!(
        start(quota(an_hour_ago)).await,
        Err(StoreError::Refused(Refusal::TooManyGenerations))
    ));
}

/// Issue 24: the streamed events through the real handler on the
/// in-memory store, against the local RunPod endpoint: created, deltas that
/// add up to the stored reply, completed; and a refusal before any event
/// is an ordinary JSON error. No DynamoDB Local.
#[tokio::test]
async fn a_streamed_send_on_the_in_memory_store_is_created_deltas_completed() {
    let model = common::local_runpod_model().await;
    let config = common::config_with("in-memory", &[]);
    let app =
        std::sync::Arc::new(App::with_store(config, MemoryStore::default()).with_model(model));
    let body = r#"{"message": "How do I organize patient files?"}"#;
    let resp = http::stream_message(
        app.clone(),
        Event::send_stream(body, Some(token("alice"))).request(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_bytes().to_vec()).unwrap();
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter_map(|frame| {
            let name = frame.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name, serde_json::from_str(data).unwrap()))
        })
        .collect();
    assert_eq!(
        events.first().map(|e| e.0),
        Some("message.created"),
        "{text}"
    );
    let (last, completed) = events.last().unwrap();
    assert_eq!(*last, "message.completed", "{text}");
    let deltas: String = events
        .iter()
        .filter(|e| e.0 == "message.delta")
        .map(|e| e.1["text"].as_str().unwrap())
        .collect();
    assert!(events.len() > 3, "several deltas: {text}");
    assert_eq!(completed["message"].as_str(), Some(deltas.as_str()));
    let id = completed["conversation_id"].as_str().unwrap();
    let (status, read_back) =
        read(http::get_conversation(&*app, Event::get(id, Some(token("alice"))).request()).await);
    assert_eq!(status, 200);
    assert_eq!(
        read_back["messages"][1]["content"].as_str(),
        Some(deltas.as_str())
    );
    // Refused before the stream starts: a JSON error with its status.
    let resp = http::stream_message(app, Event::send_stream(body, None).request()).await;
    assert_eq!(resp.status(), 401);
}

fn keyed(body: &str, user: &str, key: &str) -> lambda_http::Request {
    let mut req = Event::send(body, Some(token(user))).request();
    let value = lambda_http::http::HeaderValue::from_str(key).unwrap();
    req.headers_mut().insert("idempotency-key", value);
    req
}

/// Issue 13: a retry under the same `Idempotency-Key` gets the first answer
/// again, stores nothing and submits nothing; keys belong to their user.
#[tokio::test]
async fn a_retried_send_with_the_same_key_is_answered_once() {
    let h = Harness::new().await;
    h.replies("By patient.").await;
    let body = r#"{"message": "How do I organize patient files?"}"#;
    let first = http::send_message(&h.app, keyed(body, "alice", "retry-1")).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, first) = read(first);
    assert_eq!(status, 200);
    let again = http::send_message(&h.app, keyed(body, "alice", "retry-1")).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(read(again), (200, first.clone()));
    assert_eq!(h.job_inputs().await.len(), 1, "one job for both");
    let (_, list) = h.list(Event::list(Some(token("alice")))).await;
    assert_eq!(list["conversations"][0]["message_count"], 2, "stored once");

    let other = r#"{"message": "Something else"}"#;
    let (status, resp) = read(http::send_message(&h.app, keyed(other, "alice", "retry-1")).await);
    assert_eq!(error_code(status, &resp, 422), "idempotency_key_mismatch");
    let (status, _) = read(http::send_message(&h.app, keyed(body, "bob", "retry-1")).await);
    assert_eq!(status, 200, "bob's key is his own");
    assert_eq!(h.job_inputs().await.len(), 2);
    for bad in ["", &"k".repeat(256), "caf\u{e9}"] {
        let mut req = Event::send(body, Some(token("alice"))).request();
        let value = lambda_http::http::HeaderValue::from_bytes(bad.as_bytes()).unwrap();
        req.headers_mut().insert("idempotency-key", value);
        let (status, resp) = read(http::send_message(&h.app, req).await);
        assert_eq!(
            error_code(status, &resp, 400),
            "invalid_idempotency_key",
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn a_key_still_running_is_409_and_a_pending_answer_replays_as_202() {
    use chat_shared::store::prelude::*;
    use sha2::Digest;
    let h = Harness::with(&[("SEND_WAIT_SECONDS", "0.01")]).await;
    h.jobs_end_as(json!({"id": "job-1", "status": "IN_PROGRESS"}))
        .await;
    let body = r#"{"message": "Slow one"}"#;
    let alice = chat_shared::domain::UserId::parse("alice").unwrap();
    let hash = format!("{:x}", sha2::Sha256::digest(body.as_bytes()));
    let running = chat_shared::store::KeyedRequest {
        user: &alice,
        key: "busy",
        body_hash: &hash,
    };
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    let day = std::time::Duration::from_secs(86_400);
    h.app
        .chat
        .store()
        .start_keyed(running, later, day)
        .await
        .unwrap();
    let (status, resp) = read(http::send_message(&h.app, keyed(body, "alice", "busy")).await);
    assert_eq!(error_code(status, &resp, 409), "idempotency_key_in_use");
    assert!(h.job_inputs().await.is_empty());

    let (status, first) = read(http::send_message(&h.app, keyed(body, "alice", "slow")).await);
    assert_eq!(status, 202, "{first}");
    let (status, again) = read(http::send_message(&h.app, keyed(body, "alice", "slow")).await);
    assert_eq!((status, again), (202, first));
    assert_eq!(h.job_inputs().await.len(), 1);
}
