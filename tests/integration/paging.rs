//! Conversations at any size (issue 6), through the real handlers against
//! DynamoDB Local: paging, cursors, rename, delete.

use crate::common;
use std::collections::HashSet;

use crate::common::{error_code, read, token, Event};
use chat_service_dev::seed;
use chat_shared::{
    domain::{ConversationId, Message, MessageId, Role, UserId},
    http,
    runpod::RunPodClient,
    store::{keys, prelude::*},
    App,
};
use chrono::{Duration, Utc};
use serde_json::{json, Value};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// `n` conversations for `owner`, updated one second apart; ids newest first.
async fn seed_conversations(app: &App<RunPodClient>, owner: &str, n: usize) -> Vec<String> {
    let ids = seed::seed_conversations(app, owner, n).await;
    ids.iter().rev().map(ToString::to_string).collect()
}

/// A conversation of `n` messages; contents oldest first.
async fn seed_messages(app: &App<RunPodClient>, owner: &str, n: usize) -> (String, Vec<String>) {
    let id = seed::seed_messages(app, owner, n).await;
    (id.to_string(), seed::message_texts(n))
}

async fn list(
    app: &App<RunPodClient>,
    t: &str,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> (u16, Value) {
    let mut e = Event::list(Some(t.to_owned()));
    if let Some(l) = limit {
        e = e.query("limit", l);
    }
    if let Some(c) = cursor {
        e = e.query("cursor", c);
    }
    read(http::list_conversations(app, e.request()).await)
}

async fn get(
    app: &App<RunPodClient>,
    t: &str,
    id: &str,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> (u16, Value) {
    let mut e = Event::get(id, Some(t.to_owned()));
    if let Some(l) = limit {
        e = e.query("limit", l);
    }
    if let Some(c) = cursor {
        e = e.query("cursor", c);
    }
    read(http::get_conversation(app, e.request()).await)
}

#[tokio::test]
async fn paging_through_250_conversations_returns_each_once_newest_first() {
    let app = common::app().await;
    let ids = seed_conversations(&app, "alice", 250).await;
    seed_conversations(&app, "bob", 3).await;
    let alice = token("alice");
    for page_size in ["7", "20", "100"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let (status, page) = list(&app, &alice, Some(page_size), cursor.as_deref()).await;
            assert_eq!(status, 200, "{page}");
            let items = page["conversations"].as_array().unwrap();
            assert!(items.len() <= page_size.parse().unwrap());
            seen.extend(items.iter().map(|c| c["id"].as_str().unwrap().to_owned()));
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, ids, "page size {page_size}");
        assert_eq!(
            pages,
            250usize.div_ceil(page_size.parse().unwrap()),
            "no empty trailing page"
        );
    }
    let (_, default_page) = list(&app, &alice, None, None).await;
    assert_eq!(default_page["conversations"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn paging_back_through_1200_messages_returns_each_once_in_order() {
    let app = common::app().await;
    let (id, contents) = seed_messages(&app, "alice", 1200).await;
    let alice = token("alice");
    for page_size in ["50", "200", "37"] {
        let n: usize = page_size.parse().unwrap();
        let mut pages: Vec<Vec<String>> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (status, page) = get(&app, &alice, &id, Some(page_size), cursor.as_deref()).await;
            assert_eq!(status, 200, "{page}");
            let texts: Vec<String> = page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect();
            assert!(texts.len() <= n);
            pages.push(texts);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        // The first page is the newest messages, each page oldest first inside.
        assert_eq!(
            pages[0],
            contents[contents.len() - n..],
            "page size {page_size}"
        );
        let all: Vec<String> = pages.into_iter().rev().flatten().collect();
        assert_eq!(all, contents, "page size {page_size}");
    }
    let (_, default_page) = get(&app, &alice, &id, None, None).await;
    assert_eq!(default_page["messages"].as_array().unwrap().len(), 50);
    for bad in ["0", "-3", "x", "201"] {
        let (status, body) = get(&app, &alice, &id, Some(bad), None).await;
        assert_eq!(error_code(status, &body, 400), "invalid_limit");
    }
}

#[tokio::test]
async fn forged_foreign_and_truncated_cursors_are_400() {
    let app = common::app().await;
    seed_conversations(&app, "alice", 5).await;
    let (conv_a, _) = seed_messages(&app, "alice", 10).await;
    let (conv_b, _) = seed_messages(&app, "alice", 10).await;
    seed_conversations(&app, "bob", 5).await;
    let (alice, bob) = (token("alice"), token("bob"));

    let (_, page) = list(&app, &alice, Some("2"), None).await;
    let list_cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = get(&app, &alice, &conv_a, Some("3"), None).await;
    let msg_cursor = page["next_cursor"].as_str().unwrap().to_owned();

    let mut forged = list_cursor.clone().into_bytes();
    forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let truncated = &list_cursor[..list_cursor.len() - 4];

    for cursor in [
        forged.as_str(),
        truncated,
        "",
        "not-a-cursor",
        "a.b",
        msg_cursor.as_str(),
    ] {
        let (status, body) = list(&app, &alice, None, Some(cursor)).await;
        if cursor.is_empty() {
            assert_eq!(status, 200, "an empty cursor is the first page");
            continue;
        }
        assert_eq!(
            error_code(status, &body, 400),
            "invalid_cursor",
            "cursor {cursor:?}"
        );
    }
    // Alice's cursors are worthless to Bob, and a conversation's to another one.
    let (status, body) = list(&app, &bob, None, Some(&list_cursor)).await;
    assert_eq!(error_code(status, &body, 400), "invalid_cursor");
    let (status, body) = get(&app, &alice, &conv_b, None, Some(&msg_cursor)).await;
    assert_eq!(error_code(status, &body, 400), "invalid_cursor");
    let (status, body) = get(&app, &alice, &conv_a, None, Some(&list_cursor)).await;
    assert_eq!(error_code(status, &body, 400), "invalid_cursor");
}

#[tokio::test]
async fn rename_keeps_updated_at_and_only_touches_the_callers_conversation() {
    let app = common::app().await;
    let ids = seed_conversations(&app, "alice", 3).await;
    let alice = token("alice");
    let (_, before) = list(&app, &alice, None, None).await;
    let oldest = ids[2].clone();

    let e = Event::rename(
        &oldest,
        r#"{"title": "  Patient files  "}"#,
        Some(alice.clone()),
    );
    let (status, body) = read(http::rename_conversation(&app, e.request()).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["title"], "Patient files");
    assert_eq!(body["id"], oldest.as_str());
    assert_eq!(body["updated_at"], before["conversations"][2]["updated_at"]);

    let (_, after) = list(&app, &alice, None, None).await;
    let order: Vec<_> = after["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].clone())
        .collect();
    assert_eq!(
        order,
        ids.iter().map(|i| json!(i)).collect::<Vec<_>>(),
        "a rename does not reorder"
    );
    assert_eq!(after["conversations"][2]["title"], "Patient files");

    for (body, code) in [
        (r#"{"title": "   "}"#, "invalid_title"),
        (
            &*format!(r#"{{"title": "{}"}}"#, "x".repeat(201)),
            "invalid_title",
        ),
    ] {
        let e = Event::rename(&oldest, body, Some(alice.clone()));
        let (status, resp) = read(http::rename_conversation(&app, e.request()).await);
        assert_eq!(error_code(status, &resp, 422), code);
    }
    let e = Event::rename(&oldest, r#"{"name": "x"}"#, Some(alice.clone()));
    let (status, resp) = read(http::rename_conversation(&app, e.request()).await);
    assert_eq!(error_code(status, &resp, 400), "invalid_request");

    for (id, t) in [
        (oldest.as_str(), token("bob")),
        (&*ConversationId::new().to_string(), alice.clone()),
    ] {
        let e = Event::rename(id, r#"{"title": "Mine"}"#, Some(t.clone()));
        let (status, resp) = read(http::rename_conversation(&app, e.request()).await);
        assert_eq!(error_code(status, &resp, 404), "not_found");
    }
    let (_, after) = list(&app, &alice, None, None).await;
    assert_eq!(after["conversations"][2]["title"], "Patient files");
}

#[tokio::test]
async fn deleting_a_1000_message_conversation_removes_every_item() {
    let app = common::app().await;
    let (id, _) = seed_messages(&app, "alice", 1000).await;
    let (keep, _) = seed_messages(&app, "alice", 3).await;
    let alice = token("alice");

    // Bob cannot delete it.
    let e = Event::delete(&id, Some(token("bob")));
    let (status, body) = read(http::delete_conversation(&app, e.request()).await);
    assert_eq!(error_code(status, &body, 404), "not_found");

    let e = Event::delete(&id, Some(alice.clone()));
    let resp = http::delete_conversation(&app, e.request()).await;
    assert_eq!(resp.status(), 204);
    assert!(resp.body().is_empty());

    // Gone from get, list and send at once; a second delete is 404.
    let (status, body) = get(&app, &alice, &id, None, None).await;
    assert_eq!(error_code(status, &body, 404), "not_found");
    let (_, page) = list(&app, &alice, None, None).await;
    let listed: HashSet<_> = page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!listed.contains(&id) && listed.contains(&keep));
    let send = json!({"message": "still there?", "conversation_id": id}).to_string();
    let (status, body) =
        read(http::send_message(&app, Event::send(&send, Some(alice.clone())).request()).await);
    assert_eq!(error_code(status, &body, 404), "not_found");
    let e = Event::delete(&id, Some(alice.clone()));
    let (status, body) = read(http::delete_conversation(&app, e.request()).await);
    assert_eq!(error_code(status, &body, 404), "not_found");

    // Not one item of its partition is left (the request had time for all
    // 1000 here; the stream purge covers the case where it does not).
    let conversation = ConversationId::parse(&id).unwrap();
    let count = common::partition_items(&app, &user("alice"), conversation).await;
    assert_eq!(count, 0);
    let (status, kept) = get(&app, &alice, &keep, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(kept["messages"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_purge_cut_short_by_its_deadline_is_finished_by_the_stream_path() {
    let app = common::app().await;
    let (id, _) = seed_messages(&app, "alice", 120).await;
    let alice = user("alice");
    let conv = ConversationId::parse(&id).unwrap();
    app.chat
        .store()
        .delete_conversation(&alice, conv)
        .await
        .unwrap();
    // A deadline already passed: the request path leaves everything.
    let past = tokio::time::Instant::now();
    assert!(!app
        .chat
        .store()
        .purge_messages(&alice, conv, past)
        .await
        .unwrap());
    let pk = keys::conversation_pk(&alice, conv);
    let event: chat_shared::stream::StreamEvent = serde_json::from_value(json!({"Records": [
        {"eventName": "INSERT", "dynamodb": {"Keys": {"PK": {"S": pk}, "SK": {"S": keys::message_sk(MessageId::new())}}}},
        {"eventName": "REMOVE", "dynamodb": {"Keys": {"PK": {"S": pk}, "SK": {"S": keys::CONVERSATION_SK}}}}
    ]}))
    .unwrap();
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    assert_eq!(
        chat_shared::stream::purge_deleted(app.chat.store(), &event, until)
            .await
            .unwrap(),
        1
    );
    assert!(
        app.chat
            .store()
            .purge_messages(&alice, conv, until)
            .await
            .unwrap(),
        "nothing left"
    );
}

#[tokio::test]
async fn pages_cut_short_by_dynamodbs_1mb_limit_skip_nothing() {
    let app = common::app().await;
    let ids = seed_conversations(&app, "alice", 1).await;
    let id = ConversationId::parse(&ids[0]).unwrap();
    let mut contents = vec![seed::first_message(0)];
    let t0 = Utc::now() - Duration::hours(1);
    // 150 messages of 15 000 characters: 2.2 MB, so a 200-message page
    // cannot come back whole.
    for i in 1..150 {
        let m = Message::new(
            Role::User,
            format!("{i:05}{}", "x".repeat(15_000)),
            t0 + Duration::milliseconds(i),
        );
        app.chat
            .store()
            .append_message(&user("alice"), id, &m)
            .await
            .unwrap();
        contents.push(m.content);
    }
    let alice = token("alice");
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (status, page) = get(&app, &alice, &ids[0], Some("200"), cursor.as_deref()).await;
        assert_eq!(status, 200);
        pages.push(
            page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect(),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(pages.len() > 1, "DynamoDB returned all 2.2 MB in one page");
    assert!(pages[0].len() < 150);
    let all: Vec<String> = pages.into_iter().rev().flatten().collect();
    assert_eq!(all.len(), contents.len());
    assert!(
        all == contents,
        "messages skipped, repeated or out of order"
    );
}
