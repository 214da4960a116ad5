//! The DynamoDB store against DynamoDB Local, one fresh table per test.

use crate::common;
use chat_shared::refusal::Refusal;
use chat_shared::{app::App, runpod::RunPodClient};
use chrono::{Duration, Utc};

use chat_shared::{
    domain::{Conversation, ConversationId, Message, Role, Title, UserId},
    store::{prelude::*, PageRequest, StoreError},
};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// A conversation titled `title`, stored for `owner` with its first message.
async fn seeded(
    app: &App<RunPodClient>,
    owner: &UserId,
    title: &str,
    at: chrono::DateTime<Utc>,
) -> (Conversation, Message) {
    let first = Message::new(Role::User, format!("first message of {title}"), at);
    let c = Conversation::started_with(Title::from_stored(title.to_owned()), &first);
    app.chat
        .store()
        .create_conversation(owner, &c, &first)
        .await
        .unwrap();
    (c, first)
}

fn page(limit: u32) -> PageRequest {
    PageRequest {
        limit,
        cursor: None,
    }
}

#[tokio::test]
async fn create_then_append_then_read_back_in_order() {
    let app = common::app().await;
    let alice = user("alice");
    let t0 = Utc::now();
    let (conv, first) = seeded(&app, &alice, "files", t0).await;

    let mut expected = vec![first.content.clone()];
    for i in 0..5 {
        let role = if i % 2 == 0 {
            Role::Assistant
        } else {
            Role::User
        };
        let m = Message::new(
            role,
            format!("message {i}"),
            t0 + Duration::milliseconds(i + 1),
        );
        app.chat
            .store()
            .append_message(&alice, conv.id, &m)
            .await
            .unwrap();
        expected.push(m.content);
    }

    let (read, messages) = app
        .chat
        .store()
        .conversation_page(&alice, conv.id, &page(50))
        .await
        .unwrap();
    assert_eq!(read.title.as_str(), "files");
    assert_eq!(read.message_count, 6);
    assert_eq!(read.last_message, "message 4");
    assert_eq!(
        read.updated_at.timestamp_millis(),
        (t0 + Duration::milliseconds(5)).timestamp_millis()
    );
    let contents: Vec<_> = messages.items.iter().map(|m| m.content.clone()).collect();
    assert_eq!(contents, expected);
    assert_eq!(messages.items[1].role, Role::Assistant);
    assert_eq!(messages.next_cursor, None);
}

#[tokio::test]
async fn list_is_most_recently_updated_first_and_only_the_callers() {
    let app = common::app().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let t0 = Utc::now();
    let mut ids = Vec::new();
    for i in 0..3 {
        let (c, _) = seeded(&app, &alice, &format!("a{i}"), t0 + Duration::seconds(i)).await;
        ids.push(c.id);
    }
    let (bc, _) = seeded(&app, &bob, "bob's", t0 + Duration::seconds(10)).await;

    // A new message moves the oldest conversation to the top.
    let m = Message::new(Role::User, "bump".into(), t0 + Duration::seconds(20));
    app.chat
        .store()
        .append_message(&alice, ids[0], &m)
        .await
        .unwrap();

    let listed = app
        .chat
        .store()
        .list_conversations(&alice, &page(20))
        .await
        .unwrap();
    let order: Vec<_> = listed.items.iter().map(|c| c.id).collect();
    assert_eq!(order, vec![ids[0], ids[2], ids[1]]);
    assert_eq!(listed.items[0].last_message, "bump");
    assert_eq!(listed.next_cursor, None);

    let bobs = app
        .chat
        .store()
        .list_conversations(&bob, &page(20))
        .await
        .unwrap();
    assert_eq!(bobs.items.len(), 1);
    assert_eq!(bobs.items[0].id, bc.id);
}

#[tokio::test]
async fn another_user_can_neither_read_nor_append() {
    let app = common::app().await;
    let (alice, mallory) = (user("alice"), user("mallory"));
    let (conv, _) = seeded(&app, &alice, "private", Utc::now()).await;

    let read = app
        .chat
        .store()
        .conversation_page(&mallory, conv.id, &page(50))
        .await;
    assert!(
        matches!(read, Err(StoreError::Refused(Refusal::NotFound))),
        "{read:?}"
    );

    let m = Message::new(Role::User, "injected".into(), Utc::now());
    let write = app.chat.store().append_message(&mallory, conv.id, &m).await;
    assert!(
        matches!(write, Err(StoreError::Refused(Refusal::NotFound))),
        "{write:?}"
    );

    // Nothing was written for Alice, and the failed transaction left no
    // stray message under Mallory either.
    let (read, messages) = app
        .chat
        .store()
        .conversation_page(&alice, conv.id, &page(50))
        .await
        .unwrap();
    assert_eq!(read.message_count, 1);
    assert_eq!(messages.items.len(), 1);
    assert!(app
        .chat
        .store()
        .list_conversations(&mallory, &page(20))
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn append_to_a_missing_conversation_fails_its_condition_and_writes_nothing() {
    let client = common::dynamo().await;
    let table = common::fresh_table(&client).await;
    let app = chat_shared::App::new(common::config(&table), client.clone());
    let alice = user("alice");
    let missing = ConversationId::new();
    let m = Message::new(Role::User, "hello?".into(), Utc::now());
    let result = app.chat.store().append_message(&alice, missing, &m).await;
    assert!(
        matches!(result, Err(StoreError::Refused(Refusal::NotFound))),
        "{result:?}"
    );
    let scan = client.scan().table_name(&table).send().await.unwrap();
    assert_eq!(
        scan.count(),
        0,
        "the transaction must not leave the message behind"
    );
}

#[tokio::test]
async fn message_pages_walk_back_from_the_newest() {
    let app = common::app().await;
    let alice = user("alice");
    let t0 = Utc::now();
    let (conv, first) = seeded(&app, &alice, "long", t0).await;
    let mut all = vec![first.content.clone()];
    for i in 1..=24 {
        let m = Message::new(Role::User, format!("m{i}"), t0 + Duration::milliseconds(i));
        app.chat
            .store()
            .append_message(&alice, conv.id, &m)
            .await
            .unwrap();
        all.push(m.content);
    }
    // 25 messages, pages of 10: newest 10, then 10 before them, then 5.
    let mut pages = Vec::new();
    let mut req = page(10);
    loop {
        let (_, p) = app
            .chat
            .store()
            .conversation_page(&alice, conv.id, &req)
            .await
            .unwrap();
        pages.push(
            p.items
                .iter()
                .map(|m| m.content.clone())
                .collect::<Vec<_>>(),
        );
        match p.next_cursor {
            Some(c) => req.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0], all[15..25]);
    assert_eq!(pages[1], all[5..15]);
    assert_eq!(pages[2], all[0..5]);
}

#[tokio::test]
async fn a_cursor_only_works_for_its_own_user_and_list() {
    let app = common::app().await;
    let (alice, bob) = (user("alice"), user("bob"));
    let t0 = Utc::now();
    let mut convs = Vec::new();
    for i in 0..3 {
        let (c, _) = seeded(&app, &alice, &format!("c{i}"), t0 + Duration::seconds(i)).await;
        convs.push(c);
    }
    let first = app
        .chat
        .store()
        .list_conversations(&alice, &page(1))
        .await
        .unwrap();
    let cursor = first.next_cursor.expect("more pages");

    let foreign = PageRequest {
        limit: 1,
        cursor: Some(cursor.clone()),
    };
    let as_bob = app.chat.store().list_conversations(&bob, &foreign).await;
    assert!(
        matches!(as_bob, Err(StoreError::InvalidCursor(_))),
        "{as_bob:?}"
    );
    let as_messages = app
        .chat
        .store()
        .conversation_page(&alice, convs[0].id, &foreign)
        .await;
    assert!(
        matches!(as_messages, Err(StoreError::InvalidCursor(_))),
        "{as_messages:?}"
    );

    let second = app
        .chat
        .store()
        .list_conversations(&alice, &foreign)
        .await
        .unwrap();
    assert_eq!(second.items[0].id, convs[1].id);
}

/// Issue 27: a reply's progress and who relays it, with DynamoDB's own
/// conditions: one relay at a time, taken only from one that let go or
/// went silent.
#[tokio::test]
async fn a_relay_is_taken_only_when_none_is_alive_and_only_once() {
    use chat_shared::store::{Progress, Relaying};
    let app = common::app().await;
    let store = app.chat.store();
    let alice = user("alice");
    let (c, _) = seeded(&app, &alice, "live", Utc::now()).await;
    let reply = chat_shared::domain::MessageId::new();
    let now = Utc::now();
    let stale = now - Duration::seconds(10);
    assert_eq!(store.progress(&alice, c.id, reply).await.unwrap(), None);

    // Nobody relays yet: two attaches race, one wins.
    let (a, b) = tokio::join!(
        store.take_relay(&alice, c.id, reply, "a", now, stale),
        store.take_relay(&alice, c.id, reply, "b", now, stale),
    );
    let won: Vec<_> = [a.unwrap(), b.unwrap()]
        .into_iter()
        .filter(|r| matches!(r, Relaying::Taken(_)))
        .collect();
    assert_eq!(won.len(), 1, "exactly one relay");
    let holder = store
        .progress(&alice, c.id, reply)
        .await
        .unwrap()
        .unwrap()
        .relay;
    let other = if holder == "a" { "b" } else { "a" };

    // Only the holder saves; the other is told it lost.
    let text = |t: &str, relay: &str| Progress {
        text: t.into(),
        relay: relay.into(),
        beat: Utc::now(),
    };
    assert!(store
        .save_progress(&alice, c.id, reply, &holder, &text("Sort ", &holder))
        .await
        .unwrap());
    assert!(!store
        .save_progress(&alice, c.id, reply, other, &text("Lost", other))
        .await
        .unwrap());
    let held = store.take_relay(
        &alice,
        c.id,
        reply,
        other,
        Utc::now(),
        Utc::now() - Duration::seconds(10),
    );
    match held.await.unwrap() {
        Relaying::Held(p) => assert_eq!(
            (p.text.as_str(), p.relay.as_str()),
            ("Sort ", holder.as_str())
        ),
        taken => panic!("a live relay was taken over: {taken:?}"),
    }

    // Silent past the threshold: taken over, with the text it saved.
    let later = Utc::now() + Duration::seconds(11);
    let taken = store.take_relay(
        &alice,
        c.id,
        reply,
        other,
        later,
        later - Duration::seconds(10),
    );
    match taken.await.unwrap() {
        Relaying::Taken(p) => assert_eq!(p.text, "Sort "),
        held => panic!("a silent relay was not taken over: {held:?}"),
    }
    assert!(!store
        .save_progress(&alice, c.id, reply, &holder, &text("old", &holder))
        .await
        .unwrap());

    // The item lives in the conversation's partition: a delete's purge takes it.
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    store.purge_messages(&alice, c.id, until).await.unwrap();
    assert_eq!(store.progress(&alice, c.id, reply).await.unwrap(), None);
}
