//! End to end over HTTP, as a client would: the stack `scripts/test.sh`
//! starts (cargo lambda watch serving the functions, DynamoDB Local, the
//! local RunPod endpoint with 1.5 s jobs and webhooks, sends waiting 0.5 s)
//! at `CHAT_API_URL`.
//!
//! Ignored in the plain `cargo test` run, which has no such stack;
//! `scripts/test.sh` runs them with `--ignored` once the stack is up.

mod lifecycle;
mod streaming;

use crate::common;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

fn base() -> String {
    std::env::var("CHAT_API_URL")
        .expect("CHAT_API_URL is not set: run the end-to-end tests through scripts/test.sh")
}

async fn send(http: &reqwest::Client, token: &str, body: Value) -> (StatusCode, Value) {
    let resp = http
        .post(format!("{}/api/chat/send", base()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

async fn get(http: &reqwest::Client, token: Option<&str>, path: &str) -> (StatusCode, Value) {
    let mut req = http.get(format!("{}{path}", base()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

/// Waits until the listing (which never asks RunPod anything) shows the
/// conversation's last message changed from `from`: only the webhook can do that.
async fn wait_for_webhook(http: &reqwest::Client, token: &str, from: &str) -> Value {
    for _ in 0..100 {
        let (_, list) = get(http, Some(token), "/api/chat/conversations").await;
        let conv = list["conversations"][0].clone();
        if conv["last_message"] != from {
            return conv;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the webhook never completed the reply");
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test.sh runs it"]
async fn a_conversation_over_http_with_replies_arriving_by_webhook() {
    let http = reqwest::Client::new();
    let user = format!("e2e-{}", uuid::Uuid::new_v4());
    let token = common::token(&user);

    let (status, first) = send(
        &http,
        &token,
        json!({"message": "How do I organize patient files?"}),
    )
    .await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "pending");
    let id = first["conversation_id"].as_str().unwrap().to_owned();

    let conv = wait_for_webhook(&http, &token, "How do I organize patient files?").await;
    assert!(conv["last_message"]
        .as_str()
        .unwrap()
        .contains("How do I organize patient files?"));
    assert_eq!(conv["title"], "How do I organize patient files?");

    let (status, second) = send(
        &http,
        &token,
        json!({"message": "And X-rays?", "conversation_id": id}),
    )
    .await;
    assert_eq!(status, 202, "{second}");
    let (status, refused) = send(
        &http,
        &token,
        json!({"message": "hello?", "conversation_id": id}),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "reply_pending");
    wait_for_webhook(&http, &token, "And X-rays?").await;

    let (status, conv) = get(
        &http,
        Some(&token),
        &format!("/api/chat/conversations/{id}"),
    )
    .await;
    assert_eq!(status, 200, "{conv}");
    let messages = conv["messages"].as_array().unwrap();
    let roles: Vec<_> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert!(messages.iter().all(|m| m["status"] == "complete"), "{conv}");
    assert_eq!(messages[2]["content"], "And X-rays?");

    // Another user sees nothing of it; no token is a 401.
    let other = common::token(&format!("e2e-other-{}", uuid::Uuid::new_v4()));
    let (status, body) = get(
        &http,
        Some(&other),
        &format!("/api/chat/conversations/{id}"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&http, None, "/api/chat/conversations").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");

    // What the functions logged of all this: no message text, no token, no
    // user id (a `sub` is often an email address).
    let sent = ["How do I organize patient files?", "And X-rays?", "hello?"];
    assert_logs_hold_none_of(&[&sent[..], &[&token, &user]].concat()).await;
}

/// The functions' log of this run (`CHAT_API_LOG`, which `scripts/test.sh`
/// sets) contains none of `secrets`.
async fn assert_logs_hold_none_of(secrets: &[&str]) {
    let path = std::env::var("CHAT_API_LOG")
        .expect("CHAT_API_LOG is not set: run the end-to-end tests through scripts/test.sh");
    // The log is written as the functions run; give the last lines a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = std::fs::read_to_string(&path).unwrap();
    assert!(
        log.contains("request done"),
        "{path} is not the functions' log"
    );
    for secret in secrets {
        let shown: String = secret.chars().take(12).collect();
        assert!(!log.contains(secret), "{path} contains {shown:?}…");
    }
}
