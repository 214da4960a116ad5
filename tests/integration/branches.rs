//! Issue 26: regenerate, edit and switch through the handlers, against
//! DynamoDB Local and the local RunPod endpoint. What each job received is
//! read from what the endpoint was sent; what is stored, from the table.

use crate::common::{self, error_code, partition_items_in, read, token, Event};
use chat_service_dev::runpod_local::{LocalRunPod, Settings, DEV_REPLY_PREFIX};
use chat_shared::{
    domain::{ConversationId, Message, Role, UserId},
    http,
    runpod::RunPodClient,
    App,
};
use chrono::Utc;
use serde_json::{json, Value};

struct Stack {
    app: App<RunPodClient>,
    runpod: LocalRunPod,
}

impl Stack {
    async fn new(runpod: Settings, extra: &[(&str, &str)]) -> Self {
        let runpod = LocalRunPod::new(Settings {
            api_key: Some("test-runpod-key".into()),
            ..runpod
        });
        let url = runpod.clone().spawn().await;
        let client = common::dynamo().await;
        let table = common::fresh_table(&client).await;
        let config = common::config_with(&table, extra);
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

    async fn messages(&self, id: &str) -> Vec<Value> {
        let event = Event::get(id, Some(token("alice")));
        let (status, body) = read(http::get_conversation(&self.app, event.request()).await);
        assert_eq!(status, 200, "{body}");
        body["messages"].as_array().unwrap().clone()
    }

    /// The user and assistant texts the newest job was sent.
    fn last_history(&self) -> Vec<String> {
        let (_, input) = self.runpod.submissions().pop().expect("a job");
        input["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] != "system")
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn items(&self, id: &str) -> i32 {
        let id = ConversationId::parse(id).unwrap();
        partition_items_in(&self.app.config.table_name, &alice(), id).await
    }
}

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

/// What the local responder answers to `question`.
fn echo(question: &str) -> String {
    format!("{DEV_REPLY_PREFIX} You said: {question}")
}

fn contents(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// "q1", its reply, "q2", its reply: the conversation id and the messages.
async fn two_turns(s: &Stack) -> (String, Vec<Value>) {
    let (status, first) = s.send(json!({"message": "q1"})).await;
    assert_eq!(status, 200, "{first}");
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    let (status, body) = s
        .send(json!({"conversation_id": id, "message": "q2"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let messages = s.messages(&id).await;
    assert_eq!(contents(&messages), ["q1", &echo("q1"), "q2", &echo("q2")]);
    (id, messages)
}

#[tokio::test]
async fn regenerate_edit_and_switch_keep_every_version_and_send_only_the_path() {
    let s = Stack::new(Settings::default(), &[]).await;
    let (id, before) = two_turns(&s).await;
    // Linear messages: each follows the one before and has one version.
    assert_eq!(before[0]["parent_id"], Value::Null);
    for pair in before.windows(2) {
        assert_eq!(pair[1]["parent_id"], pair[0]["id"]);
        assert_eq!(pair[1]["sibling_ids"], json!([pair[1]["id"]]));
    }

    // Regenerate the last reply: the model sees up to its question.
    let (status, regenerated) = s
        .send(json!({"conversation_id": id, "regenerate": before[3]["id"]}))
        .await;
    assert_eq!(status, 200, "{regenerated}");
    assert_eq!(regenerated["user_message_id"], before[2]["id"]);
    assert_eq!(s.last_history(), ["q1", &echo("q1"), "q2"]);
    let path = s.messages(&id).await;
    assert_eq!(path.len(), 4);
    assert_eq!(path[3]["id"], regenerated["message_id"]);
    assert_eq!(path[3]["parent_id"], before[2]["id"]);
    assert_eq!(
        path[3]["sibling_ids"],
        json!([before[3]["id"], regenerated["message_id"]])
    );

    // Edit the middle question: the model sees the path before it and the edit.
    let (status, edited) = s
        .send(json!({"conversation_id": id, "edit_of": before[2]["id"], "message": "q2b"}))
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(s.last_history(), ["q1", &echo("q1"), "q2b"]);
    let path = s.messages(&id).await;
    assert_eq!(contents(&path), ["q1", &echo("q1"), "q2b", &echo("q2b")]);
    assert_eq!(
        path[2]["sibling_ids"],
        json!([before[2]["id"], edited["user_message_id"]])
    );

    // Switch back to the first reply: the path runs through it again.
    let (status, summary) = s
        .patch(&id, json!({"active_message_id": before[3]["id"]}))
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["message_count"], 4);
    assert_eq!(summary["last_message"], echo("q2"));
    let path = s.messages(&id).await;
    assert_eq!(
        path.iter().map(id_of).collect::<Vec<_>>(),
        before.iter().map(id_of).collect::<Vec<_>>()
    );
    assert_eq!(path[3]["sibling_ids"].as_array().unwrap().len(), 2);
    // A send continues the path switched to.
    let (status, _) = s
        .send(json!({"conversation_id": id, "message": "q3"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        s.last_history(),
        ["q1", &echo("q1"), "q2", &echo("q2"), "q3"]
    );
    // And forward to the edit, with a title in the same PATCH.
    let (status, summary) = s
        .patch(
            &id,
            json!({"active_message_id": edited["message_id"], "title": "Files"}),
        )
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["title"], "Files");
    assert_eq!(
        contents(&s.messages(&id).await),
        ["q1", &echo("q1"), "q2b", &echo("q2b")]
    );

    // Edit the first message: a path of its own.
    let (status, first) = s
        .send(json!({"conversation_id": id, "edit_of": before[0]["id"], "message": "q1b"}))
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(s.last_history(), ["q1b"]);
    let path = s.messages(&id).await;
    assert_eq!(contents(&path), ["q1b", &echo("q1b")]);
    assert_eq!(path[0]["parent_id"], Value::Null);
    assert_eq!(
        path[0]["sibling_ids"],
        json!([before[0]["id"], first["user_message_id"]])
    );
    // The list describes the active path.
    let event = Event::list(Some(token("alice")));
    let (_, list) = read(http::list_conversations(&s.app, event.request()).await);
    assert_eq!(list["conversations"][0]["message_count"], 2);
    assert_eq!(list["conversations"][0]["last_message"], echo("q1b"));

    // Every version is kept: 4 + 1 regenerated + 2 edited + 2 sent + 2 first, and the conversation.
    assert_eq!(s.items(&id).await, 12);
    // Deleting the conversation removes every branch.
    let event = Event::delete(&id, Some(token("alice")));
    let (status, _) = read(http::delete_conversation(&s.app, event.request()).await);
    assert_eq!(status, 204);
    assert_eq!(s.items(&id).await, 0);
}

#[tokio::test]
async fn refused_regenerates_and_edits_store_nothing_and_submit_nothing() {
    let s = Stack::new(Settings::default(), &[]).await;
    let (id, before) = two_turns(&s).await;
    let (jobs, items) = (s.runpod.submitted(), s.items(&id).await);
    let unknown = chat_shared::domain::MessageId::new().to_string();
    let cases = [
        (
            json!({"conversation_id": id, "regenerate": before[2]["id"]}),
            422,
            "invalid_target",
        ),
        (
            json!({"conversation_id": id, "edit_of": before[3]["id"], "message": "x"}),
            422,
            "invalid_target",
        ),
        (
            json!({"conversation_id": id, "regenerate": unknown}),
            404,
            "not_found",
        ),
        (
            json!({"conversation_id": id, "edit_of": unknown, "message": "x"}),
            404,
            "not_found",
        ),
        (
            json!({"conversation_id": id, "regenerate": before[3]["id"], "message": "x"}),
            400,
            "invalid_request",
        ),
        (
            json!({"conversation_id": id, "regenerate": before[3]["id"], "edit_of": before[2]["id"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"conversation_id": id, "edit_of": before[2]["id"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"regenerate": before[3]["id"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"conversation_id": id, "regenerate": null}),
            400,
            "invalid_message_id",
        ),
        (
            json!({"conversation_id": id, "regenerate": "not-an-id"}),
            400,
            "invalid_message_id",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = s.send(body.clone()).await;
        assert_eq!(error_code(got, &answer, status), code, "{body}");
    }
    // Another user's conversation is not found, whatever message it names.
    let event = Event::send(
        &json!({"conversation_id": id, "regenerate": before[3]["id"]}).to_string(),
        Some(token("bob")),
    );
    let (got, answer) = read(http::send_message(&s.app, event.request()).await);
    assert_eq!(error_code(got, &answer, 404), "not_found");
    let (got, answer) = s.patch(&id, json!({"active_message_id": unknown})).await;
    assert_eq!(error_code(got, &answer, 404), "not_found");
    assert_eq!((s.runpod.submitted(), s.items(&id).await), (jobs, items));
    assert_eq!(s.messages(&id).await, before);
}

#[tokio::test]
async fn a_regenerate_edit_or_switch_while_a_reply_is_pending_is_409() {
    let held = Settings {
        hold: true,
        ..Settings::default()
    };
    let s = Stack::new(held, &[("SEND_WAIT_SECONDS", "0.01")]).await;
    let (status, first) = s.send(json!({"message": "q1"})).await;
    assert_eq!(status, 202, "{first}");
    let id = first["conversation_id"].as_str().unwrap().to_owned();
    s.runpod.release(None);
    // The reply completes on a read; then one more turn, left pending.
    while s.messages(&id).await[1]["status"] == "pending" {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, regenerated) = s
        .send(json!({"conversation_id": id, "regenerate": first["message_id"]}))
        .await;
    assert_eq!(status, 202, "{regenerated}");
    let (jobs, items) = (s.runpod.submitted(), s.items(&id).await);
    let path = s.messages(&id).await;
    for body in [
        json!({"conversation_id": id, "regenerate": path[1]["id"]}),
        json!({"conversation_id": id, "edit_of": path[0]["id"], "message": "q1b"}),
    ] {
        let (got, answer) = s.send(body).await;
        assert_eq!(error_code(got, &answer, 409), "reply_pending");
    }
    let (got, answer) = s
        .patch(&id, json!({"active_message_id": first["message_id"]}))
        .await;
    assert_eq!(error_code(got, &answer, 409), "reply_pending");
    assert_eq!((s.runpod.submitted(), s.items(&id).await), (jobs, items));
    s.runpod.release(None);
}

/// Messages stored before branches (no parent, no versions on any item)
/// read as they did, with the parent and versions their order gives.
#[tokio::test]
async fn conversations_stored_before_branches_read_and_branch_without_a_migration() {
    let s = Stack::new(Settings::default(), &[]).await;
    let store = s.app.chat.store();
    let messages: Vec<Message> = ["q1", "a1", "q2", "a2"]
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            Message::new(role, (*text).into(), Utc::now())
        })
        .collect();
    let title = chat_shared::domain::Title::from_stored("Old".into());
    let conversation = chat_shared::domain::Conversation::started_with(title, &messages[0]);
    store
        .create_conversation(&alice(), &conversation, &messages[0])
        .await
        .unwrap();
    for m in &messages[1..] {
        store
            .append_message(&alice(), conversation.id, m)
            .await
            .unwrap();
    }
    let id = conversation.id.to_string();
    let read_back = s.messages(&id).await;
    assert_eq!(contents(&read_back), ["q1", "a1", "q2", "a2"]);
    assert_eq!(read_back[0]["parent_id"], Value::Null);
    assert_eq!(read_back[2]["parent_id"], messages[1].id.to_string());
    assert_eq!(
        read_back[2]["sibling_ids"],
        json!([messages[2].id.to_string()])
    );
    // Paged two at a time: the parent of a page's oldest message is known.
    let event = Event::get(&id, Some(token("alice"))).query("limit", "2");
    let (_, page) = read(http::get_conversation(&s.app, event.request()).await);
    assert_eq!(page["messages"][0]["parent_id"], messages[1].id.to_string());
    let cursor = page["next_cursor"].as_str().unwrap();
    let event = Event::get(&id, Some(token("alice")))
        .query("limit", "2")
        .query("cursor", cursor);
    let (_, page) = read(http::get_conversation(&s.app, event.request()).await);
    assert_eq!(contents(page["messages"].as_array().unwrap()), ["q1", "a1"]);
    assert_eq!(page["messages"][0]["parent_id"], Value::Null);
    // It branches as a new one does.
    let (status, answer) = s
        .send(json!({"conversation_id": id, "regenerate": messages[3].id.to_string()}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(s.last_history(), ["q1", "a1", "q2"]);
    let path = s.messages(&id).await;
    assert_eq!(
        path[3]["sibling_ids"],
        json!([messages[3].id.to_string(), answer["message_id"]])
    );
}
