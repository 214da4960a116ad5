//! The rest of a conversation's life over HTTP, and the purge function
//! invoked through `cargo lambda watch` as the table's stream would: every
//! function of the template makes its calls here at least once, so the
//! calls recorded under `AWS_CALL_LOG` (`tests/deploy/check_template.py`)
//! cover every role.

use aws_sdk_dynamodb::types::AttributeValue;
use chat_shared::{
    domain::{ConversationId, UserId},
    store::keys,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{base, get, send, wait_for_webhook};
use crate::common;

/// The table of the stack `scripts/test.sh` started.
fn table() -> String {
    std::env::var("TABLE_NAME").expect("scripts/test.sh sets TABLE_NAME")
}

/// Items left in a conversation's partition, read straight from the table.
async fn partition_items(user: &str, id: &str) -> i32 {
    let (user, id) = (
        UserId::parse(user).unwrap(),
        ConversationId::parse(id).unwrap(),
    );
    common::partition_items_in(&table(), &user, id).await
}

/// A conversation with its first reply complete (by webhook).
async fn conversation(http: &reqwest::Client, token: &str, text: &str) -> String {
    let (status, first) = send(http, token, json!({ "message": text })).await;
    assert_eq!(status, 202, "{first}");
    wait_for_webhook(http, token, text).await;
    first["conversation_id"].as_str().unwrap().to_owned()
}

async fn call(req: reqwest::RequestBuilder) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[tokio::test]
#[ignore = "needs the local stack; scripts/test.sh runs it"]
async fn rename_usage_idempotent_retries_delete_and_the_purge() {
    let http = reqwest::Client::new();
    let user = format!("e2e-life-{}", uuid::Uuid::new_v4());
    let token = common::token(&user);
    let id = conversation(&http, &token, "Where do referrals go?").await;

    let rename = http
        .patch(format!("{}/api/chat/conversations/{id}", base()))
        .bearer_auth(&token)
        .json(&json!({"title": "Referrals"}));
    let (status, _, renamed) = call(rename).await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["title"], "Referrals");

    // Settings by PATCH: max_tokens alone is checked against the stored
    // model, which the function reads for it (its role's Query).
    let (status, models) = get(&http, Some(&token), "/api/chat/models").await;
    assert_eq!(status, 200, "{models}");
    let model = &models["models"][0];
    assert_eq!(
        (&model["id"], &model["default"]),
        (&json!("default"), &json!(true))
    );
    let patch = http
        .patch(format!("{}/api/chat/conversations/{id}", base()))
        .bearer_auth(&token)
        .json(&json!({"settings": {"max_tokens": 100, "temperature": 0.5}}));
    let (status, _, patched) = call(patch).await;
    assert_eq!(
        (status, &patched["model"]),
        (StatusCode::OK, &json!("default")),
        "{patched}"
    );
    let path = format!("/api/chat/conversations/{id}");
    let (status, read) = get(&http, Some(&token), &path).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["settings"]["max_tokens"], 100, "{read}");

    // Feedback on the reply (message-feedback: its role's UpdateItem).
    let reply = read["messages"][1]["id"].as_str().unwrap().to_owned();
    let feedback = format!("{}{path}/messages/{reply}/feedback", base());
    let rate = http
        .put(&feedback)
        .bearer_auth(&token)
        .json(&json!({"rating": "up", "comment": "Clear."}));
    let (status, _, rated) = call(rate).await;
    assert_eq!(status, 200, "{rated}");
    assert_eq!(rated["feedback"]["rating"], "up", "{rated}");
    let (status, _, _) = call(http.delete(&feedback).bearer_auth(&token)).await;
    assert_eq!(status, 204);
    // Export (export-conversation: its role's Query).
    let (status, file) = get(&http, Some(&token), &format!("{path}/export")).await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["messages"][1]["id"], reply.as_str(), "{file}");
    // Every conversation (export-all, streamed: Query on the index, then
    // on each partition).
    let resp = http
        .get(format!("{}/api/chat/export", base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["messages"], file["messages"], "{text}");
    assert_eq!(lines[1], json!({"end": "complete", "conversations": 1}));
    // A share link (conversation-shares: Query, ConditionCheckItem,
    // PutItem; GetItem for the list; DeleteItem to revoke) read without a
    // token (read-share: GetItem).
    let shares = format!("{}{path}/shares", base());
    let (status, _, link) = call(http.post(&shares).bearer_auth(&token)).await;
    assert_eq!(status, 201, "{link}");
    let (status, listed) = get(&http, Some(&token), &format!("{path}/shares")).await;
    assert_eq!(
        (status, &listed["shares"][0]),
        (StatusCode::OK, &link),
        "{listed}"
    );
    let (status, copy) = get(&http, None, link["url"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{copy}");
    assert_eq!(copy["messages"][1]["role"], "assistant", "{copy}");
    let share = link["share_id"].as_str().unwrap();
    let revoke = http.delete(format!("{shares}/{share}")).bearer_auth(&token);
    assert_eq!(call(revoke).await.0, 204);
    let (status, _) = get(&http, None, link["url"].as_str().unwrap()).await;
    assert_eq!(status, 404);

    let (status, usage) = get(&http, Some(&token), "/api/chat/usage").await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["messages"], 1, "{usage}");

    // A send under a key, its retry (the first answer again), and another
    // key refused while that reply is pending: a refusal stores nothing,
    // so its key is freed for a later try.
    let keyed = |key: &str, text: &str| {
        http.post(format!("{}/api/chat/send", base()))
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .json(&json!({"message": text, "conversation_id": id}))
    };
    let (status, _, first) = call(keyed("k-1", "And lab results?")).await;
    assert_eq!(status, 202, "{first}");
    let (status, headers, again) = call(keyed("k-1", "And lab results?")).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["message_id"], first["message_id"]);
    let (status, _, refused) = call(keyed("k-2", "Hello?")).await;
    assert_eq!(status, 409, "{refused}");
    wait_for_webhook(&http, &token, "And lab results?").await;

    let delete = http
        .delete(format!("{}/api/chat/conversations/{id}", base()))
        .bearer_auth(&token);
    let (status, _, body) = call(delete).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(partition_items(&user, &id).await, 0);

    // Deleted while its reply is pending (delete-conversation: GetItem of
    // the reply, to cancel its job at RunPod).
    let (status, sent) = send(&http, &token, json!({"message": "Is this kept?"})).await;
    assert_eq!(status, 202, "{sent}");
    let pending = sent["conversation_id"].as_str().unwrap().to_owned();
    let delete = http
        .delete(format!("{}/api/chat/conversations/{pending}", base()))
        .bearer_auth(&token);
    let (status, _, body) = call(delete).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(partition_items(&user, &pending).await, 0);

    // A delete cut short leaves messages behind its removed conversation
    // item; the table's stream then hands the removal to the purge.
    let id = conversation(&http, &token, "Who sees the billing notes?").await;
    let pk = keys::conversation_pk(
        &UserId::parse(&user).unwrap(),
        ConversationId::parse(&id).unwrap(),
    );
    common::dynamo()
        .await
        .delete_item()
        .table_name(table())
        .key(keys::PK, AttributeValue::S(pk.clone()))
        .key(keys::SK, AttributeValue::S(keys::CONVERSATION_SK.into()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        partition_items(&user, &id).await,
        2,
        "the two messages are left"
    );
    let mut record: Value =
        serde_json::from_str(include_str!("../../../events/purge-stream.json")).unwrap();
    record["Records"][0]["dynamodb"]["Keys"]["PK"]["S"] = json!(pk);
    let invoke = http
        .post(format!(
            "{}/2015-03-31/functions/purge-conversation/invocations",
            base()
        ))
        .json(&record);
    let (status, _, body) = call(invoke).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(partition_items(&user, &id).await, 0, "purged");
}
