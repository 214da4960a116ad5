//! `POST /api/chat/send/stream` and `POST …/{id}/stop` over HTTP against
//! cargo lambda watch: the local RunPod endpoint writes each reply word by
//! word over 1.5 s.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{base, get, send};
use crate::common;

/// A Server-Sent Events response, read event by event as it arrives.
struct Events {
    resp: reqwest::Response,
    buf: String,
    opened: Instant,
}

/// One event: its id, name and data, when it arrived after the request.
struct Event {
    id: Option<u64>,
    name: String,
    data: Value,
    at: Duration,
}

impl Events {
    async fn open(http: &reqwest::Client, token: &str, body: Value) -> Self {
        let opened = Instant::now();
        let resp = http
            .post(format!("{}/api/chat/send/stream", base()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let content_type = resp.headers()["content-type"].to_str().unwrap();
        assert_eq!(content_type, "text/event-stream");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        Self {
            resp,
            buf: String::new(),
            opened,
        }
    }

    /// `GET /api/chat/conversations/{id}/stream`, after event `last`.
    async fn attach(http: &reqwest::Client, token: &str, id: &str, last: Option<u64>) -> Self {
        let opened = Instant::now();
        let mut req = http
            .get(format!("{}/api/chat/conversations/{id}/stream", base()))
            .bearer_auth(token);
        if let Some(n) = last {
            req = req.header("last-event-id", n.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self {
            resp,
            buf: String::new(),
            opened,
        }
    }

    /// The next event (comments skipped), or `None` at the end.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if block.starts_with(':') || block.starts_with("retry:") {
                    continue; // a keep-alive, or the time to wait before reconnecting
                }
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or_else(|| panic!("no {name} in {block:?}"))
                        .to_owned()
                };
                let data = serde_json::from_str(&field("data: ")).unwrap();
                let at = self.opened.elapsed();
                let id = block.lines().find_map(|l| l.strip_prefix("id: "));
                return Some(Event {
                    id: id.map(|i| i.parse().unwrap()),
                    name: field("event: "),
                    data,
                    at,
                });
            }
            let chunk = self.resp.chunk().await.unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Every event to the end.
    async fn rest(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(e) = self.next().await {
            events.push(e);
        }
        events
    }
}

fn deltas(events: &[Event]) -> String {
    let texts = events.iter().filter(|e| e.name == "message.delta");
    texts.map(|e| e.data["text"].as_str().unwrap()).collect()
}

async fn stop(http: &reqwest::Client, token: &str, id: &str) -> (StatusCode, Value) {
    let resp = http
        .post(format!("{}/api/chat/conversations/{id}/stop", base()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test.sh runs it"]
async fn a_streamed_reply_arrives_word_by_word_and_is_the_stored_reply() {
    let http = reqwest::Client::new();
    let token = common::token(&format!("e2e-{}", uuid::Uuid::new_v4()));
    let refused = http
        .post(format!("{}/api/chat/send/stream", base()))
        .json(&json!({"message": "no token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");

    let question = json!({"message": "How do I organize patient files?"});
    let events = Events::open(&http, &token, question).await.rest().await;
    assert_eq!(events[0].name, "message.created");
    let created = &events[0].data;
    let last = events.last().unwrap();
    assert_eq!(last.name, "message.completed", "{:?}", last.data);
    let first_delta = events.iter().find(|e| e.name == "message.delta").unwrap();
    assert!(
        last.at - first_delta.at >= Duration::from_millis(700),
        "the words came at once: first at {:?}, completed at {:?}",
        first_delta.at,
        last.at
    );
    let written = deltas(&events);
    assert_eq!(last.data["message"], written);
    assert_eq!(last.data["message_id"], created["message_id"]);
    let id = created["conversation_id"].as_str().unwrap();
    let (_, stored) = get(
        &http,
        Some(&token),
        &format!("/api/chat/conversations/{id}"),
    )
    .await;
    assert_eq!(stored["messages"][1]["content"], written);
    assert_eq!(stored["messages"][1]["status"], "complete");
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test.sh runs it"]
async fn stop_ends_a_stream_and_a_pending_reply_and_nothing_to_stop_is_409() {
    let http = reqwest::Client::new();
    let token = common::token(&format!("e2e-{}", uuid::Uuid::new_v4()));
    let mut stream = Events::open(&http, &token, json!({"message": "Tell me more"})).await;
    let created = stream.next().await.unwrap().data;
    let id = created["conversation_id"].as_str().unwrap().to_owned();
    let mut events = vec![stream.next().await.unwrap()];
    assert_eq!(events[0].name, "message.delta");
    let (status, stopped) = stop(&http, &token, &id).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "cancelled");
    assert_eq!(stopped["id"], created["message_id"]);
    events.extend(stream.rest().await);
    let last = events.last().unwrap();
    assert_eq!(last.name, "message.cancelled", "{:?}", last.data);
    assert_eq!(last.data["content"], deltas(&events));
    let path = format!("/api/chat/conversations/{id}");
    let (_, stored) = get(&http, Some(&token), &path).await;
    assert_eq!(stored["messages"][1]["status"], "cancelled");
    assert_eq!(stored["messages"][1]["content"], deltas(&events));
    let (status, body) = stop(&http, &token, &id).await;
    assert_eq!(
        (status.as_u16(), &body["error"]["code"]),
        (409, &json!("no_reply_in_progress"))
    );

    // A reply pending after a 202 (sends wait 0.5 s, jobs take 1.5 s).
    let (status, pending) = send(
        &http,
        &token,
        json!({"message": "next", "conversation_id": id}),
    )
    .await;
    assert_eq!(
        status, 202,
        "the stopped reply freed the conversation: {pending}"
    );
    let (status, stopped) = stop(&http, &token, &id).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(
        (stopped["content"].as_str(), stopped["status"].as_str()),
        (Some(""), Some("cancelled"))
    );
    assert_eq!(stopped["id"], pending["message_id"]);
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test.sh runs it"]
async fn a_client_that_disconnects_finds_the_reply_complete_later() {
    let http = reqwest::Client::new();
    let token = common::token(&format!("e2e-{}", uuid::Uuid::new_v4()));
    let mut stream = Events::open(&http, &token, json!({"message": "Bye for now"})).await;
    let created = stream.next().await.unwrap().data;
    drop(stream);
    let path = format!(
        "/api/chat/conversations/{}",
        created["conversation_id"].as_str().unwrap()
    );
    for _ in 0..50 {
        let (_, stored) = get(&http, Some(&token), &path).await;
        let reply = &stored["messages"][1];
        if reply["status"] == "complete" {
            assert_eq!(reply["id"], created["message_id"]);
            assert!(reply["content"].as_str().unwrap().contains("Bye for now"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the reply of a stream whose client left never completed");
}

/// Follows a reply to its end, dropping the connection after every three
/// deltas and attaching again with the last id; the text and the last event.
async fn follow_dropping(
    http: &reqwest::Client,
    token: &str,
    id: &str,
    mut events: Events,
    mut last: u64,
) -> (String, Event, u32) {
    let (mut text, mut reconnects) = (String::new(), 0);
    loop {
        let mut seen = 0;
        while let Some(e) = events.next().await {
            last = e.id.expect("every event has an id");
            if e.name != "message.delta" {
                return (text, e, reconnects);
            }
            text.push_str(e.data["text"].as_str().unwrap());
            assert_eq!(
                last,
                text.chars().count() as u64,
                "an id is the length so far"
            );
            seen += 1;
            if seen == 3 {
                break;
            }
        }
        drop(events);
        reconnects += 1;
        assert!(reconnects < 60, "the reply never ended");
        events = Events::attach(http, token, id, Some(last)).await;
    }
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test.sh runs it"]
async fn a_stream_dropped_every_three_deltas_resumes_with_no_gap_and_no_repeat() {
    let http = reqwest::Client::new();
    let token = common::token(&format!("e2e-{}", uuid::Uuid::new_v4()));
    let question = "How do I organize patient files so that every nurse finds them at once?";
    let mut stream = Events::open(&http, &token, json!({ "message": question })).await;
    let created = stream.next().await.unwrap();
    assert_eq!(
        (created.name.as_str(), created.id),
        ("message.created", Some(0))
    );
    let id = created.data["conversation_id"].as_str().unwrap().to_owned();
    let (text, last, reconnects) = follow_dropping(&http, &token, &id, stream, 0).await;
    assert_eq!(last.name, "message.completed", "{:?}", last.data);
    assert!(
        reconnects >= 2,
        "several reconnects in one reply ({reconnects})"
    );
    assert_eq!(last.data["message"], text.as_str(), "no gap and no repeat");
    let path = format!("/api/chat/conversations/{id}");
    let (_, stored) = get(&http, Some(&token), &path).await;
    assert_eq!(stored["messages"][1]["content"], text.as_str());

    // A final reply replays: whole without an id, only its end after one.
    let whole = Events::attach(&http, &token, &id, None).await.rest().await;
    let names: Vec<&str> = whole.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["message.created", "message.delta", "message.completed"]
    );
    assert_eq!(deltas(&whole), text);
    let mut end = Events::attach(&http, &token, &id, Some(text.chars().count() as u64)).await;
    let end = end.rest().await;
    assert_eq!(end.len(), 1);
    assert_eq!(end[0].name, "message.completed");

    // Another user's attach is 404.
    let other = common::token("e2e-someone-else");
    let resp = http
        .get(format!("{}/api/chat/conversations/{id}/stream", base()))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test.sh runs it"]
async fn a_reply_pending_after_a_202_is_attached_and_ends_with_completed() {
    let http = reqwest::Client::new();
    let token = common::token(&format!("e2e-{}", uuid::Uuid::new_v4()));
    // Sends wait 0.5 s, jobs take 1.5 s: 202.
    let (status, pending) = send(&http, &token, json!({"message": "Take your time"})).await;
    assert_eq!(status, 202, "{pending}");
    let id = pending["conversation_id"].as_str().unwrap();
    let events = Events::attach(&http, &token, id, None).await.rest().await;
    assert_eq!(events[0].name, "message.created");
    assert_eq!(events[0].data["message_id"], pending["message_id"]);
    let last = events.last().unwrap();
    assert_eq!(last.name, "message.completed", "{:?}", last.data);
    assert_eq!(last.data["message"], deltas(&events).as_str());
}
