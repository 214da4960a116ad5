//! Issue 29: feedback, export and share links through the handlers, against DynamoDB
//! Local and the local RunPod endpoint: given, replaced, shown, listed by
//! day for operators, taken back; every refusal stores nothing.

use std::time::Duration;

use crate::common::{self, error_code, read, token, Event};
use chat_service_dev::runpod_local::{LocalRunPod, Settings};
use chat_shared::{domain::format_timestamp, http, runpod::RunPodClient, App};
use serde_json::{json, Value};

struct Rig {
    app: App<RunPodClient>,
    client: aws_sdk_dynamodb::Client,
    table: String,
    runpod: LocalRunPod,
}

impl Rig {
    /// Jobs end at once unless `hold` (then they run until released);
    /// sends wait 0.3 s.
    async fn new(hold: bool) -> Self {
        let runpod = LocalRunPod::new(Settings {
            api_key: Some("test-runpod-key".into()),
            execution_time: Duration::ZERO,
            hold,
            ..Settings::default()
        });
        let url = runpod.clone().spawn().await;
        let client = common::dynamo().await;
        let table = common::fresh_table(&client).await;
        let config = common::config_with(&table, &[("SEND_WAIT_SECONDS", "0.3")]);
        let model = RunPodClient::new(common::runpod_config(&url, &[])).unwrap();
        let app = App::new(config, client.clone()).with_model(model);
        Self {
            app,
            client,
            table,
            runpod,
        }
    }

    async fn send(&self, body: Value, user: &str) -> (u16, Value) {
        let event = Event::send(&body.to_string(), Some(token(user)));
        read(http::send_message(&self.app, event.request()).await)
    }

    async fn get(&self, id: &str, user: &str) -> (u16, Value) {
        read(http::get_conversation(&self.app, Event::get(id, Some(token(user))).request()).await)
    }

    async fn rate(&self, id: &str, message: &str, body: &str, user: &str) -> (u16, Value) {
        let event = Event::feedback(id, message, Some(body), Some(token(user)));
        read(http::message_feedback(&self.app, event.request()).await)
    }

    async fn take_back(&self, id: &str, message: &str, user: &str) -> (u16, Value) {
        let event = Event::feedback(id, message, None, Some(token(user)));
        read(http::message_feedback(&self.app, event.request()).await)
    }

    /// The documented operator query (README, "Feedback"): a day's
    /// ratings from the index, as (message id, rating).
    async fn ratings_of_today(&self) -> Vec<(String, String)> {
        let day = chrono::Utc::now().format("%Y-%m-%d");
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("GSI1")
            .key_condition_expression("GSI1PK = :day")
            .expression_attribute_values(
                ":day",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("RATING#{day}")),
            )
            .send()
            .await
            .unwrap();
        let text = |item: &std::collections::HashMap<_, _>, name: &str| match item.get(name) {
            Some(aws_sdk_dynamodb::types::AttributeValue::S(v)) => v.clone(),
            _ => String::new(),
        };
        out.items()
            .iter()
            .map(|i| (text(i, "message_id"), text(i, "rating")))
            .collect()
    }

    /// A conversation with one complete reply: (conversation, question, reply).
    async fn answered(&self, user: &str) -> (String, String, String) {
        let (status, sent) = self
            .send(json!({"message": "How do I organize patient files?"}), user)
            .await;
        assert_eq!(status, 200, "{sent}");
        let id = sent["conversation_id"].as_str().unwrap().to_owned();
        let question = sent["user_message_id"].as_str().unwrap().to_owned();
        let reply = sent["message_id"].as_str().unwrap().to_owned();
        (id, question, reply)
    }
}

#[tokio::test]
async fn a_reply_is_rated_replaced_shown_listed_and_taken_back() {
    let rig = Rig::new(false).await;
    let (id, _, reply) = rig.answered("alice").await;

    let before = chrono::Utc::now();
    let body = r#"{"rating": "down", "comment": "It missed the retention rules."}"#;
    let (status, rated) = rig.rate(&id, &reply, body, "alice").await;
    assert_eq!(status, 200, "{rated}");
    assert_eq!(rated["id"], reply.as_str());
    assert_eq!(rated["feedback"]["rating"], "down");
    assert_eq!(
        rated["feedback"]["comment"],
        "It missed the retention rules."
    );
    let at = rated["feedback"]["updated_at"].as_str().unwrap();
    assert!(at >= format_timestamp(before).as_str(), "{at}");

    let (_, read_back) = rig.get(&id, "alice").await;
    assert_eq!(read_back["messages"][1]["feedback"], rated["feedback"]);
    assert!(read_back["messages"][0].get("feedback").is_none());

    // A second rating replaces the first, comment and all.
    let (status, again) = rig.rate(&id, &reply, r#"{"rating": "up"}"#, "alice").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["feedback"]["rating"], "up");
    assert!(again["feedback"].get("comment").is_none(), "{again}");
    assert_eq!(
        rig.ratings_of_today().await,
        vec![(reply.clone(), "up".into())]
    );

    let (status, _) = rig.take_back(&id, &reply, "alice").await;
    assert_eq!(status, 204);
    let (_, read_back) = rig.get(&id, "alice").await;
    assert!(
        read_back["messages"][1].get("feedback").is_none(),
        "{read_back}"
    );
    assert!(rig.ratings_of_today().await.is_empty());
    // Taking back what is not there is not an error.
    assert_eq!(rig.take_back(&id, &reply, "alice").await.0, 204);
}

#[tokio::test]
async fn refusals_name_what_is_wrong_and_store_nothing() {
    let rig = Rig::new(false).await;
    let (id, question, reply) = rig.answered("alice").await;
    let up = r#"{"rating": "up"}"#;

    let (status, body) = rig.rate(&id, &question, up, "alice").await;
    assert_eq!(error_code(status, &body, 422), "invalid_target");
    let unknown = uuid::Uuid::now_v7().to_string();
    for message in [unknown.as_str(), "not-a-uuid"] {
        let (status, body) = rig.rate(&id, message, up, "alice").await;
        assert_eq!(error_code(status, &body, 404), "not_found");
        let (status, body) = rig.take_back(&id, message, "alice").await;
        assert_eq!(error_code(status, &body, 404), "not_found");
    }
    // Another user's conversation: not found, whatever they name.
    let (status, body) = rig.rate(&id, &reply, up, "mallory").await;
    assert_eq!(error_code(status, &body, 404), "not_found");
    let (status, body) = rig.take_back(&id, &reply, "mallory").await;
    assert_eq!(error_code(status, &body, 404), "not_found");

    let long = "x".repeat(2_001);
    for (body, field) in [
        (r#"{"rating": "meh"}"#.to_owned(), "rating"),
        (r#"{"comment": "no rating"}"#.to_owned(), "rating"),
        (r#"{"rating": null}"#.to_owned(), "rating"),
        (
            json!({"rating": "up", "comment": long}).to_string(),
            "comment",
        ),
        (r#"{"rating": "up", "comment": 5}"#.to_owned(), "comment"),
    ] {
        let (status, answer) = rig.rate(&id, &reply, &body, "alice").await;
        assert_eq!(
            error_code(status, &answer, 422),
            "invalid_feedback",
            "{body}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
    let (status, body) = rig
        .rate(&id, &reply, r#"{"rating": "up", "stars": 5}"#, "alice")
        .await;
    assert_eq!(error_code(status, &body, 400), "invalid_request");
    assert!(body["error"]["message"].as_str().unwrap().contains("stars"));
    let (status, body) = rig.rate(&id, &reply, "{", "alice").await;
    assert_eq!(error_code(status, &body, 400), "invalid_json");

    // 2 000 characters is the limit, not past it.
    let at_limit = json!({"rating": "up", "comment": "x".repeat(2_000)}).to_string();
    assert_eq!(rig.rate(&id, &reply, &at_limit, "alice").await.0, 200);
    assert_eq!(
        rig.ratings_of_today().await.len(),
        1,
        "only the accepted one"
    );
}

#[tokio::test]
async fn a_reply_being_written_takes_no_feedback_until_it_is_final() {
    let rig = Rig::new(true).await;
    let (status, sent) = rig
        .send(
            json!({"message": "How do I organize patient files?"}),
            "alice",
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let (id, reply) = (
        sent["conversation_id"].as_str().unwrap(),
        sent["message_id"].as_str().unwrap(),
    );
    let (status, body) = rig.rate(id, reply, r#"{"rating": "up"}"#, "alice").await;
    assert_eq!(error_code(status, &body, 422), "invalid_target");
    rig.runpod.release(None);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, read_back) = rig.get(id, "alice").await;
    assert_eq!(read_back["messages"][1]["status"], "complete");
    let (status, body) = rig.rate(id, reply, r#"{"rating": "up"}"#, "alice").await;
    assert_eq!(status, 200, "{body}");
}

/// Every version of a reply takes its own rating, off the active path too,
/// and keeps it when a switch moves it back on.
#[tokio::test]
async fn versions_off_the_path_are_rated_and_keep_it_across_switches() {
    let rig = Rig::new(false).await;
    let (id, _, first) = rig.answered("alice").await;
    let (status, regenerated) = rig
        .send(json!({"conversation_id": id, "regenerate": first}), "alice")
        .await;
    assert_eq!(status, 200, "{regenerated}");
    let second = regenerated["message_id"].as_str().unwrap();

    let (status, rated) = rig
        .rate(&id, &first, r#"{"rating": "down"}"#, "alice")
        .await;
    assert_eq!(status, 200, "{rated}");
    let (status, _) = rig.rate(&id, second, r#"{"rating": "up"}"#, "alice").await;
    assert_eq!(status, 200);

    let switch = json!({"active_message_id": first}).to_string();
    let event = Event::rename(&id, &switch, Some(token("alice")));
    let (status, body) = read(http::rename_conversation(&rig.app, event.request()).await);
    assert_eq!(status, 200, "{body}");
    let (_, read_back) = rig.get(&id, "alice").await;
    assert_eq!(read_back["messages"][1]["id"], first.as_str());
    assert_eq!(read_back["messages"][1]["feedback"]["rating"], "down");
    let mut listed = rig.ratings_of_today().await;
    listed.sort();
    let mut want = vec![
        (first.clone(), "down".to_owned()),
        (second.to_owned(), "up".to_owned()),
    ];
    want.sort();
    assert_eq!(listed, want, "one index entry per rated version");
}

/// Export (issue 29): the conversation as a file, every branch in JSON,
/// the active path in Markdown; refusals.
#[tokio::test]
async fn a_conversation_exports_as_json_with_every_branch_and_as_markdown() {
    let rig = Rig::new(false).await;
    let (id, question, first) = rig.answered("alice").await;
    let (status, regenerated) = rig
        .send(json!({"conversation_id": id, "regenerate": first}), "alice")
        .await;
    assert_eq!(status, 200, "{regenerated}");
    let second = regenerated["message_id"].as_str().unwrap().to_owned();
    assert_eq!(
        rig.rate(&id, &first, r#"{"rating": "down"}"#, "alice")
            .await
            .0,
        200
    );

    let export = |format: Option<&str>, user: &str| {
        let mut event = Event::export(&id, Some(token(user)));
        if let Some(f) = format {
            event = event.query("format", f);
        }
        let app = &rig.app;
        async move { http::export_conversation(app, event.request()).await }
    };
    let resp = export(None, "alice").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"how-do-i-organize-patient-files.json\""
    );
    let (_, file) = read(resp);
    assert_eq!(file["id"], id.as_str());
    assert_eq!(file["title"], "How do I organize patient files?");
    assert_eq!(file["settings"]["model"], "default");
    let ids: Vec<&str> = file["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [question.as_str(), first.as_str(), second.as_str()],
        "oldest first, both branches"
    );
    let messages = file["messages"].as_array().unwrap();
    assert_eq!(messages[1]["parent_id"], question.as_str());
    assert_eq!(messages[2]["parent_id"], question.as_str());
    assert_eq!(messages[1]["sibling_ids"], json!([first, second]));
    assert_eq!(messages[1]["feedback"]["rating"], "down");
    assert!(messages[2]["usage"].is_object(), "{}", messages[2]);

    let resp = export(Some("markdown"), "alice").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/markdown; charset=utf-8"
    );
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.ends_with(".md\""), "{disposition}");
    let text = String::from_utf8(resp.body().as_ref().to_vec()).unwrap();
    assert!(
        text.starts_with("# How do I organize patient files?\n\n## You · "),
        "{text}"
    );
    assert_eq!(
        text.matches("## Assistant · ").count(),
        1,
        "the active path only: {text}"
    );
    assert!(
        text.contains(regenerated["message"].as_str().unwrap()),
        "{text}"
    );

    let (status, body) = read(export(Some("pdf"), "alice").await);
    assert_eq!(error_code(status, &body, 400), "invalid_format");
    let (status, body) = read(export(None, "mallory").await);
    assert_eq!(error_code(status, &body, 404), "not_found");
}

impl Rig {
    /// `GET /api/chat/export` from `cursor`, under `EXPORT_MAX_BYTES`
    /// `max_bytes`, with two minutes to go: (status, content type, every
    /// line as JSON).
    async fn export_all(
        &self,
        user: &str,
        cursor: Option<&str>,
        max_bytes: &str,
    ) -> (u16, String, Vec<Value>) {
        self.export_all_within(user, cursor, max_bytes, "120").await
    }

    /// [`Rig::export_all`] with `budget_secs` to its deadline.
    async fn export_all_within(
        &self,
        user: &str,
        cursor: Option<&str>,
        max_bytes: &str,
        budget_secs: &str,
    ) -> (u16, String, Vec<Value>) {
        use http_body_util::BodyExt;
        let extra = [
            ("EXPORT_MAX_BYTES", max_bytes),
            ("REQUEST_BUDGET_SECS", budget_secs),
        ];
        let config = common::config_with(&self.table, &extra);
        let app = std::sync::Arc::new(App::new(config, self.client.clone()));
        let mut event = Event::export_all(Some(token(user)));
        if let Some(c) = cursor {
            event = event.query("cursor", c);
        }
        let resp = http::export_all(app, event.request()).await;
        let status = resp.status().as_u16();
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(text.ends_with('\n') || status != 200, "{text}");
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (status, kind, lines)
    }
}

#[tokio::test]
async fn every_conversation_exports_as_ndjson_in_pages_and_only_the_callers() {
    let rig = Rig::new(false).await;
    let (rated, _, reply) = rig.answered("alice").await;
    assert_eq!(
        rig.rate(&rated, &reply, r#"{"rating": "up"}"#, "alice")
            .await
            .0,
        200
    );
    // 30 conversations: more than a page of the export's list (25).
    let seeded = chat_service_dev::seed::seed_conversations(&rig.app, "alice", 29).await;
    let (theirs, _, _) = rig.answered("mallory").await;
    let mut alices: Vec<String> = seeded.iter().map(|id| id.to_string()).collect();
    alices.push(rated.clone());
    alices.sort();

    let (status, kind, lines) = rig.export_all("alice", None, "150000000").await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(kind, "application/x-ndjson");
    let (end, conversations) = lines.split_last().unwrap();
    assert_eq!(end, &json!({"end": "complete", "conversations": 30}));
    // Most recently updated first: the rated one (updated now) leads.
    assert_eq!(conversations[0]["id"], rated.as_str());
    assert_eq!(conversations[0]["messages"][1]["feedback"]["rating"], "up");
    assert_eq!(conversations[0]["settings"]["model"], "default");
    let mut ids: Vec<String> = conversations
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, alices, "each of alice's once, none of mallory's");
    assert!(!lines.iter().any(|l| l.to_string().contains(&theirs)));

    // A budget of one byte: the first page, then a cursor to go on from.
    let (status, _, first) = rig.export_all("alice", None, "1").await;
    assert_eq!(status, 200);
    let end = first.last().unwrap();
    assert_eq!(
        (&end["end"], &end["conversations"]),
        (&json!("partial"), &json!(25))
    );
    let cursor = end["next_cursor"].as_str().unwrap().to_owned();
    let (status, _, rest) = rig.export_all("alice", Some(&cursor), "1").await;
    assert_eq!(status, 200);
    assert_eq!(
        rest.last().unwrap(),
        &json!({"end": "complete", "conversations": 5})
    );
    let mut pieced: Vec<String> = first[..25]
        .iter()
        .chain(&rest[..5])
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    pieced.sort();
    assert_eq!(pieced, alices, "the two pieces are the whole, once");
    // Less than 30 s to its deadline (25 s): the same, for time.
    let (_, _, first) = rig
        .export_all_within("alice", None, "150000000", "25")
        .await;
    let end = first.last().unwrap();
    assert_eq!(
        (&end["end"], &end["conversations"]),
        (&json!("partial"), &json!(25))
    );

    // Refused before the stream, as JSON: someone else's cursor, a
    // forged one, no token.
    let (status, kind, body) = rig.export_all("mallory", Some(&cursor), "1").await;
    assert_eq!(kind, "application/json");
    assert_eq!(error_code(status, &body[0], 400), "invalid_cursor");
    let (status, _, body) = rig.export_all("alice", Some("forged"), "1").await;
    assert_eq!(error_code(status, &body[0], 400), "invalid_cursor");
    let config = common::config(&rig.table);
    let app = std::sync::Arc::new(App::new(config, rig.client.clone()));
    let resp = http::export_all(app, Event::export_all(None).request()).await;
    assert_eq!(resp.status(), 401);

    // Nobody's conversations: an empty export that says it is whole.
    let (status, _, lines) = rig.export_all("nobody", None, "1").await;
    assert_eq!(status, 200);
    assert_eq!(lines, [json!({"end": "complete", "conversations": 0})]);
}

impl Rig {
    async fn share(&self, id: &str, user: &str) -> (u16, Value) {
        let event = Event::shares("POST", id, Some(token(user)));
        read(http::conversation_shares(&self.app, event.request()).await)
    }

    async fn shares(&self, id: &str, user: &str) -> (u16, Value) {
        let event = Event::shares("GET", id, Some(token(user)));
        read(http::conversation_shares(&self.app, event.request()).await)
    }

    async fn revoke(&self, id: &str, share: &str, user: &str) -> (u16, Value) {
        let event = Event::revoke_share(id, share, Some(token(user)));
        read(http::conversation_shares(&self.app, event.request()).await)
    }

    /// The public read, without a token: status, headers, body.
    async fn read_share(&self, share: &str) -> (u16, lambda_http::http::HeaderMap, Value) {
        let resp = http::read_share(&self.app, Event::read_share(share).request()).await;
        let headers = resp.headers().clone();
        let (status, body) = read(resp);
        (status, headers, body)
    }
}

/// Share links (issue 29): a snapshot of the active path, readable without
/// a token, never showing later messages or anything of the user's beyond
/// the text; listed, revoked, and gone with the conversation.
#[tokio::test]
async fn a_share_link_shows_a_snapshot_until_revoked_or_deleted() {
    let rig = Rig::new(false).await;
    let (id, _, reply) = rig.answered("alice").await;
    assert_eq!(
        rig.rate(
            &id,
            &reply,
            r#"{"rating": "up", "comment": "secret note"}"#,
            "alice"
        )
        .await
        .0,
        200
    );

    let (status, link) = rig.share(&id, "alice").await;
    assert_eq!(status, 201, "{link}");
    let share = link["share_id"].as_str().unwrap().to_owned();
    assert_eq!(share.len(), 22);
    assert_eq!(link["url"], format!("/api/chat/shares/{share}"));

    // A later message is not in the copy.
    let (status, _) = rig
        .send(
            json!({"conversation_id": id, "message": "And for minors?"}),
            "alice",
        )
        .await;
    assert_eq!(status, 200);

    let (status, headers, copy) = rig.read_share(&share).await;
    assert_eq!(status, 200, "{copy}");
    assert_eq!(headers["x-robots-tag"], "noindex");
    assert_eq!(headers["cache-control"], "private, max-age=60");
    assert_eq!(copy["title"], "How do I organize patient files?");
    assert_eq!(copy["created_at"], link["created_at"]);
    let messages = copy["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "the path when the link was made: {copy}");
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "How do I organize patient files?");
    assert_eq!(messages[1]["role"], "assistant");
    // Nothing but who, what and when: no ids, no user, no feedback.
    for m in messages {
        let mut keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["content", "role", "timestamp"]);
    }
    let text = copy.to_string();
    for private in [
        "alice",
        id.as_str(),
        reply.as_str(),
        "secret note",
        "feedback",
    ] {
        assert!(!text.contains(private), "{private} leaked: {text}");
    }

    // A second link; both listed, oldest first; another user sees none.
    let (_, second) = rig.share(&id, "alice").await;
    let (status, listed) = rig.shares(&id, "alice").await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["share_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [share.as_str(), second["share_id"].as_str().unwrap()]);
    for (status, body) in [
        rig.shares(&id, "mallory").await,
        rig.share(&id, "mallory").await,
        rig.revoke(&id, &share, "mallory").await,
    ] {
        assert_eq!(error_code(status, &body, 404), "not_found");
    }
    assert_eq!(
        rig.read_share(&share).await.0,
        200,
        "mallory's revoke did nothing"
    );

    // Revoked: the same 404 as a link that never existed, or not an id at all.
    assert_eq!(rig.revoke(&id, &share, "alice").await.0, 204);
    let (status, _, body) = rig.read_share(&share).await;
    assert_eq!(error_code(status, &body, 404), "not_found");
    let never = "AAAAAAAAAAAAAAAAAAAAAA";
    for unknown in [never, "not-an-id"] {
        let (status, _, other) = rig.read_share(unknown).await;
        assert_eq!((status, &other), (404, &body), "{unknown}");
    }
    let (status, body) = rig.revoke(&id, &share, "alice").await;
    assert_eq!(error_code(status, &body, 404), "not_found");

    // Deleting the conversation revokes the rest at once, and its purge
    // removes their copies.
    let second = second["share_id"].as_str().unwrap();
    assert_eq!(rig.read_share(second).await.0, 200);
    let event = Event::delete(&id, Some(token("alice")));
    assert_eq!(
        read(http::delete_conversation(&rig.app, event.request()).await).0,
        204
    );
    assert_eq!(rig.read_share(second).await.0, 404);
    let copy = rig
        .client
        .get_item()
        .table_name(&rig.table)
        .key(
            "PK",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("SHARE#{second}")),
        )
        .key(
            "SK",
            aws_sdk_dynamodb::types::AttributeValue::S("SHARE".into()),
        )
        .send()
        .await
        .unwrap();
    assert!(copy.item.is_none(), "the copy outlived its conversation");
}

/// A conversation with a link still reads, pages, exports and switches
/// branches: the link's record sits in its partition, never as a message.
#[tokio::test]
async fn a_shared_conversation_reads_exports_and_branches_as_before() {
    let rig = Rig::new(false).await;
    let (id, _, first) = rig.answered("alice").await;
    assert_eq!(rig.share(&id, "alice").await.0, 201);
    let (status, regenerated) = rig
        .send(json!({"conversation_id": id, "regenerate": first}), "alice")
        .await;
    assert_eq!(status, 200, "{regenerated}");
    let switch = json!({"active_message_id": first}).to_string();
    let event = Event::rename(&id, &switch, Some(token("alice")));
    assert_eq!(
        read(http::rename_conversation(&rig.app, event.request()).await).0,
        200
    );
    let (status, read_back) = rig.get(&id, "alice").await;
    assert_eq!(status, 200, "{read_back}");
    assert_eq!(read_back["messages"].as_array().unwrap().len(), 2);
    let event = Event::export(&id, Some(token("alice")));
    let (status, file) = read(http::export_conversation(&rig.app, event.request()).await);
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["messages"].as_array().unwrap().len(), 3);
}
