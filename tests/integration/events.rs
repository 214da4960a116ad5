//! Every file in `events/` through the real handler of its route, against
//! DynamoDB Local and the local RunPod endpoint.

use crate::common;
use chat_service_dev::DEV_SIGNING_SECRET;
use chat_shared::webhook::Webhooks;
use chat_shared::{
    chat::QuotaLimits,
    domain::{
        Claim, Conversation, ConversationId, Message, MessageId, MessageStatus, Role,
        SettingsPatch, Title, UserId,
    },
    http,
    runpod::RunPodClient,
    store::{prelude::*, PageRequest},
    stream::{self, StreamEvent},
};
use chrono::Utc;
use std::time::Duration;

/// The conversation the sample events name; it belongs to alice.
const SAMPLE_CONVERSATION: &str = "3f1c2b9e-8a7d-4c55-9e21-6d0b7a4e5f10";
/// The reply `events/feedback.json` rates.
const SAMPLE_RATED: &str = "019ab000-0000-7000-8000-000000000002";

/// The reply `events/runpod-webhook.json`'s token names.
const SAMPLE_REPLY: &str = "019ab000-0000-7000-8000-000000000001";

fn expected_status(file: &str) -> u16 {
    match file {
        "send-new.json" | "send-existing.json" | "list.json" | "get.json" | "rename.json" => 200,
        "usage.json" | "models.json" => 200,
        "delete.json" => 204,
        "feedback.json" | "export.json" => 200,
        "share.json" => 201,
        "export-all.json" => 200,
        "read-share-unknown.json" => 404,
        "runpod-webhook.json" => 200,
        "runpod-webhook-bad-token.json" => 401,
        "send-bad-body.json" => 400,
        "send-no-token.json" => 401,
        "get-other-user.json" | "rename-other-user.json" => 404,
        "send-empty-message.json" => 422,
        "send-stream.json" => 200,
        // The sample conversation's replies are complete by then.
        "stop.json" => 409,
        other => panic!("events/{other} has no expected status in tests/events.rs: add it"),
    }
}

/// The route an event is for: its `routeKey`, or for a function URL's
/// event (`$default`: a function URL routes nothing) the route of the one
/// function deployed at its URL with a path of its own, the webhook.
fn route_of(event: &serde_json::Value) -> &str {
    let key = event["routeKey"].as_str().unwrap();
    let path = event["rawPath"].as_str().unwrap();
    if key == "$default" && path.starts_with("/api/chat/runpod/webhook/") {
        return "POST /api/chat/runpod/webhook/{token}";
    }
    if key == "$default" && path == "/api/chat/export" {
        return "GET /api/chat/export";
    }
    key
}

/// Stores a question claiming the conversation for `reply`, as a send
/// does before it asks the model.
async fn ask_for(
    store: &impl Store,
    user: &UserId,
    conversation: ConversationId,
    reply: MessageId,
) {
    let question = Message::new(Role::User, "a question".into(), Utc::now());
    let claim = Claim {
        reply,
        until: Utc::now() + chrono::Duration::seconds(60),
    };
    let unlimited = QuotaLimits::default().at(Utc::now());
    store
        .append_and_claim(
            user,
            conversation,
            &question,
            &claim,
            &unlimited,
            &SettingsPatch::default(),
        )
        .await
        .unwrap();
}

/// Items left in the sample conversation's partition.
async fn partition_items<M>(app: &chat_shared::App<M>) -> i32 {
    let alice = UserId::parse("alice").unwrap();
    let id = ConversationId::parse(SAMPLE_CONVERSATION).unwrap();
    common::partition_items(app, &alice, id).await
}

#[tokio::test]
async fn every_sample_event_gets_its_documented_status() {
    let app = common::app().await;
    let model = common::local_runpod_model().await;
    // The webhook sample's job, as RunPod's `status` reports it: the
    // webhook stores what RunPod says, not what the delivery says.
    let status = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/test-endpoint/status/sample-job"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "id": "sample-job", "status": "COMPLETED",
                "output": [{"choices": [{"tokens": ["Sort them by patient, then by date."]}]}],
            })),
        )
        .mount(&status)
        .await;
    let hooks_app = chat_shared::App::new(app.config.clone(), common::dynamo().await)
        .with_model(RunPodClient::new(common::runpod_config(&status.uri(), &[])).unwrap());
    let app = std::sync::Arc::new(app.with_model(model));

    let alice = UserId::parse("alice").unwrap();
    let first = Message::new(
        Role::User,
        "How do I organize patient files?".into(),
        Utc::now(),
    );
    let seeded = Conversation {
        id: ConversationId::parse(SAMPLE_CONVERSATION).unwrap(),
        ..Conversation::started_with(
            Title::from_stored("How do I organize patient files?".into()),
            &first,
        )
    };
    app.chat
        .store()
        .create_conversation(&alice, &seeded, &first)
        .await
        .unwrap();

    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 14, "events/ lost files: {files:?}");

    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        // Every event starts from alice's sample conversation with its first
        // message, whatever the event before it did (delete.json removes it).
        let page = PageRequest {
            limit: 1,
            cursor: None,
        };
        if app
            .chat
            .store()
            .conversation_page(&alice, seeded.id, &page)
            .await
            .is_err()
        {
            let first = Message::new(Role::User, first.content.clone(), Utc::now());
            app.chat
                .store()
                .create_conversation(&alice, &seeded, &first)
                .await
                .unwrap();
        }
        let text = std::fs::read_to_string(&file).unwrap();
        if name == "runpod-webhook.json" {
            // The reply the sample token names, pending for the sample job.
            let reply = Message {
                id: MessageId::parse(SAMPLE_REPLY).unwrap(),
                role: Role::Assistant,
                content: String::new(),
                created_at: Utc::now(),
                usage: None,
                status: MessageStatus::Pending {
                    job_id: "sample-job".into(),
                },
                truncated: false,
                reserved: None,
                model: None,
                parent: None,
                versions: vec![],
                children: vec![],
                feedback: None,
            };
            let store = app.chat.store();
            ask_for(store, &alice, seeded.id, reply.id).await;
            store
                .add_pending_reply(&alice, seeded.id, &reply, None)
                .await
                .unwrap();
        }
        if name == "feedback.json" {
            // The reply it rates, complete, after a question that claimed
            // the conversation for it, as a send stores them.
            let reply = Message {
                id: MessageId::parse(SAMPLE_RATED).unwrap(),
                model: None,
                ..Message::new(Role::Assistant, "Sort them by patient.".into(), Utc::now())
            };
            let store = app.chat.store();
            ask_for(store, &alice, seeded.id, reply.id).await;
            store.add_reply(&alice, seeded.id, &reply).await.unwrap();
        }
        if name == "purge-stream.json" {
            // Delete, as the stream would report it, then the purge function's work.
            app.chat
                .store()
                .delete_conversation(&alice, seeded.id)
                .await
                .unwrap();
            let event: StreamEvent = serde_json::from_str(&text).unwrap();
            let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            assert_eq!(
                partition_items(&app).await,
                1,
                "the first message is there before the purge"
            );
            assert_eq!(
                stream::purge_deleted(app.chat.store(), &event, until)
                    .await
                    .unwrap(),
                1
            );
            assert_eq!(
                partition_items(&app).await,
                0,
                "{name}: messages left after the purge"
            );
            continue;
        }
        let req = lambda_http::request::from_str(&text)
            .unwrap_or_else(|e| panic!("{name} is not an API Gateway event: {e}"));
        let route: serde_json::Value = serde_json::from_str(&text).unwrap();
        if route["routeKey"] == "POST /api/chat/send/stream" {
            let resp = http::stream_message(app.clone(), req).await;
            assert_eq!(resp.status(), expected_status(&name), "{name}");
            let body = http_body_util::BodyExt::collect(resp.into_body()).await;
            let text = String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap();
            assert!(
                text.starts_with("id: 0\nevent: message.created\n"),
                "{name}: {text}"
            );
            assert!(
                text.contains("event: message.completed\n"),
                "{name}: {text}"
            );
            continue;
        }
        if route_of(&route) == "GET /api/chat/export" {
            let resp = http::export_all(app.clone(), req).await;
            assert_eq!(resp.status(), expected_status(&name), "{name}");
            let body = http_body_util::BodyExt::collect(resp.into_body()).await;
            let text = String::from_utf8(body.unwrap().to_bytes().to_vec()).unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines[0]["id"], SAMPLE_CONVERSATION, "{name}: {text}");
            assert_eq!(lines.last().unwrap()["end"], "complete", "{name}: {text}");
            continue;
        }
        let resp = match route_of(&route) {
            "POST /api/chat/send" => http::send_message(&app, req).await,
            "GET /api/chat/conversations" => http::list_conversations(&app, req).await,
            "GET /api/chat/conversations/{id}" => http::get_conversation(&app, req).await,
            "PATCH /api/chat/conversations/{id}" => http::rename_conversation(&app, req).await,
            "DELETE /api/chat/conversations/{id}" => http::delete_conversation(&app, req).await,
            "POST /api/chat/runpod/webhook/{token}" => http::runpod_webhook(&hooks_app, req).await,
            "GET /api/chat/usage" => http::get_usage(&app, req).await,
            "GET /api/chat/models" => http::list_models(&app, req).await,
            "POST /api/chat/conversations/{id}/stop" => http::stop_reply(&app, req).await,
            "GET /api/chat/conversations/{id}/export" => {
                let resp = http::export_conversation(&app, req).await;
                assert_eq!(resp.status(), 200, "{name}");
                let body: &[u8] = resp.body().as_ref();
                let text = String::from_utf8_lossy(body);
                assert!(
                    text.starts_with("# How do I organize patient files?\n"),
                    "{text}"
                );
                continue;
            }
            "POST /api/chat/conversations/{id}/shares" => {
                http::conversation_shares(&app, req).await
            }
            "GET /api/chat/shares/{share_id}" => http::read_share(&app, req).await,
            "PUT /api/chat/conversations/{id}/messages/{message_id}/feedback" => {
                http::message_feedback(&app, req).await
            }
            other => panic!("{name}: unknown route {other}"),
        };
        let (status, body) = common::read(resp);
        assert_eq!(status, expected_status(&name), "{name}: {body}");
        if name == "get.json" {
            assert_eq!(body["id"], SAMPLE_CONVERSATION);
        }
        if name == "feedback.json" {
            assert_eq!(body["feedback"]["rating"], "down", "{body}");
            // The next event starts from the sample conversation alone again.
            let store = app.chat.store();
            store.delete_conversation(&alice, seeded.id).await.unwrap();
            let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            assert!(store
                .purge_messages(&alice, seeded.id, until)
                .await
                .unwrap());
        }
        if name == "runpod-webhook.json" {
            let (_, page) = app
                .chat
                .store()
                .conversation_page(
                    &alice,
                    seeded.id,
                    &PageRequest {
                        limit: 10,
                        cursor: None,
                    },
                )
                .await
                .unwrap();
            let reply = page
                .items
                .iter()
                .find(|m| m.id.to_string() == SAMPLE_REPLY)
                .expect("the sample reply");
            assert_eq!(reply.status, MessageStatus::Complete);
            assert_eq!(reply.content, "Sort them by patient, then by date.");
        }
    }
}

#[test]
fn the_sample_webhook_token_is_sealed_with_the_dev_secret_until_2100() {
    let text = include_str!("../../events/runpod-webhook.json");
    let event: serde_json::Value = serde_json::from_str(text).unwrap();
    let path = event["rawPath"].as_str().unwrap();
    let webhooks = Webhooks::new(None, DEV_SIGNING_SECRET.as_bytes(), Duration::ZERO);
    let expected = webhooks.token_until(
        &UserId::parse("alice").unwrap(),
        ConversationId::parse(SAMPLE_CONVERSATION).unwrap(),
        MessageId::parse(SAMPLE_REPLY).unwrap(),
        "2100-01-01T00:00:00Z".parse().unwrap(),
    );
    assert_eq!(path.rsplit('/').next().unwrap(), expected);
}
