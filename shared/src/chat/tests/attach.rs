//! Attaching to a reply (issue 27) against the in-memory store and the
//! scripted model: replays, reconnects after a given character, takeovers
//! of a relay that left or went silent, and the refusals.

use super::streaming::{relay, start, streaming, Client};
use super::*;
use crate::chat::StreamEvent;
use crate::store::{Live, Progress};

const PIECES: [&str; 4] = ["Sort ", "them ", "by ", "patient."];

/// Attaches to the latest reply of `id` from `after`, to its end.
async fn attach(
    chat: &Chat<MemoryStore, ScriptedModel>,
    id: ConversationId,
    after: Option<usize>,
) -> Client {
    let attached = chat.find_reply(&alice(), id).await.unwrap();
    let client = Client::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    chat.attach(attached, after, &mut client.clone(), deadline)
        .await;
    client
}

fn names(client: &Client) -> Vec<&'static str> {
    let events = client.events.lock().unwrap();
    events
        .iter()
        .map(|e| match e {
            StreamEvent::Created { .. } => "created",
            StreamEvent::Delta(_) => "delta",
            StreamEvent::KeepAlive => "keep-alive",
            StreamEvent::Completed(_) => "completed",
            StreamEvent::Failed(_) => "failed",
            StreamEvent::Cancelled { .. } => "cancelled",
            StreamEvent::Retry => "retry",
        })
        .collect()
}

fn completed_text(client: &Client) -> String {
    let events = client.events.lock().unwrap();
    match events.last() {
        Some(StreamEvent::Completed(out)) => out.reply.content.clone(),
        other => panic!("not completed: {other:?}"),
    }
}

#[tokio::test]
async fn a_final_reply_is_replayed_whole_or_from_the_last_id() {
    let chat = streaming(PIECES.to_vec(), Ending::Completes);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    relay(&chat, started, &Client::default()).await;
    let whole = "Sort them by patient.";

    let from_start = attach(&chat, id, None).await;
    assert_eq!(names(&from_start), ["created", "delta", "completed"]);
    assert_eq!(from_start.deltas(), whole);

    let from_five = attach(&chat, id, Some(5)).await;
    assert_eq!(names(&from_five), ["delta", "completed"]);
    assert_eq!(from_five.deltas(), &whole[5..]);

    let at_end = attach(&chat, id, Some(whole.len())).await;
    assert_eq!(names(&at_end), ["completed"]);
    assert_eq!(completed_text(&at_end), whole);
    // Past the end (the last event's id): still only the last event.
    assert_eq!(
        names(&attach(&chat, id, Some(whole.len() + 1)).await),
        ["completed"]
    );
}

#[tokio::test]
async fn a_client_that_left_gets_the_rest_with_no_gap_and_no_repeat() {
    let chat = streaming(PIECES.to_vec(), Ending::Completes);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    // Created and two deltas, then the connection drops.
    let first = Client {
        leave_after: Some(3),
        ..Client::default()
    };
    relay(&chat, started, &first).await;
    let had = first.deltas();
    assert_eq!(had, "Sort them ");
    assert!(read(&chat, id).await[1].is_pending(), "nobody finished it");
    let reply = read(&chat, id).await[1].id;
    let saved = chat.store().progress(&alice(), id, reply).await;
    let saved = saved.unwrap().unwrap();
    assert_eq!(saved.relay, "", "the relay let go when its client left");

    // The reconnect takes over and sends only what the client lacks.
    let second = attach(&chat, id, Some(had.chars().count())).await;
    assert_eq!(names(&second).first(), Some(&"delta"), "no created again");
    let whole = format!("{had}{}", second.deltas());
    assert_eq!(whole, "Sort them by patient.");
    assert_eq!(completed_text(&second), whole);
    let stored = &read(&chat, id).await[1];
    assert_eq!(stored.content, whole);
    assert_eq!(stored.status, MessageStatus::Complete);
    assert_eq!(chat.model().submitted().len(), 1, "one job for the reply");
}

#[tokio::test]
async fn a_relay_silent_past_its_beat_is_taken_over_and_the_reply_completes() {
    let chat = streaming(PIECES.to_vec(), Ending::Completes);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    let first = Client {
        leave_after: Some(2),
        ..Client::default()
    };
    relay(&chat, started, &first).await;
    // As if its process died after saving "Sort ": a named relay whose
    // beat is older than RELAY_GONE.
    let reply = read(&chat, id).await[1].id;
    let dead = Progress {
        text: "Sort ".into(),
        relay: "dead".into(),
        beat: chrono::Utc::now() - chrono::Duration::seconds(11),
    };
    assert!(chat
        .store()
        .save_progress(&alice(), id, reply, "", &dead)
        .await
        .unwrap());
    let taken = attach(&chat, id, None).await;
    assert_eq!(names(&taken)[0], "created");
    assert_eq!(taken.deltas(), "Sort them by patient.");
    assert_eq!(completed_text(&taken), "Sort them by patient.");
    let stored = &read(&chat, id).await[1];
    assert_eq!(stored.status, MessageStatus::Complete);
    assert_eq!(stored.content, "Sort them by patient.");
    let taken = chat.store().progress(&alice(), id, reply).await.unwrap();
    assert_ne!(taken.unwrap().relay, "dead", "the attach relayed it");
}

#[tokio::test]
async fn a_live_relay_is_followed_not_taken_over() {
    let chat = streaming(PIECES.to_vec(), Ending::Never);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    relay(
        &chat,
        started,
        &Client {
            leave_after: Some(1),
            ..Client::default()
        },
    )
    .await;
    let reply = read(&chat, id).await[1].id;
    // Another instance relays: it saved "Sort them " a moment ago.
    let alive = Progress {
        text: "Sort them ".into(),
        relay: "elsewhere".into(),
        beat: chrono::Utc::now(),
    };
    chat.store()
        .save_progress(&alice(), id, reply, "", &alive)
        .await
        .unwrap();
    let attached = chat.find_reply(&alice(), id).await.unwrap();
    let client = Client::default();
    let deadline = Instant::now() + Duration::from_millis(600);
    chat.attach(attached, Some(5), &mut client.clone(), deadline)
        .await;
    assert_eq!(
        client.deltas(),
        "them ",
        "the saved text after the client's id"
    );
    assert_eq!(names(&client).last(), Some(&"retry"), "at its deadline");
    let still = chat.store().progress(&alice(), id, reply).await.unwrap();
    assert_eq!(still.unwrap().relay, "elsewhere", "not taken over");
}

#[tokio::test(start_paused = true)]
async fn a_reply_pending_after_a_202_can_be_attached_and_completes() {
    let chat = chat(ScriptedModel::with(Script::Running));
    let out = send(&chat, None, "How do I organize patient files?")
        .await
        .unwrap();
    assert!(out.reply.is_pending(), "202");
    let id = out.conversation_id;
    chat.model()
        .set("job-1", Script::Reply("File them by date."));
    let client = attach(&chat, id, None).await;
    assert_eq!(names(&client), ["created", "delta", "completed"]);
    assert_eq!(client.deltas(), "File them by date.");
    assert_eq!(read(&chat, id).await[1].content, "File them by date.");
}

#[tokio::test]
async fn another_users_conversation_is_404_and_no_reply_is_409() {
    let chat = streaming(PIECES.to_vec(), Ending::Completes);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    relay(&chat, started, &Client::default()).await;
    let bob = UserId::parse("bob").unwrap();
    assert!(matches!(
        chat.find_reply(&bob, id).await,
        Err(ChatError::Refused(Refusal::NotFound))
    ));
    // A send whose job could not be submitted leaves its question unanswered.
    let refusing = chat_refusing();
    let failed = send(&refusing, None, "Hello?").await;
    assert!(failed.is_err());
    let list = refusing.list_conversations(&alice(), &first_page(10)).await;
    let conversation = list.unwrap().items[0].id;
    assert!(matches!(
        refusing.find_reply(&alice(), conversation).await,
        Err(ChatError::Refused(Refusal::NoReplyInProgress))
    ));
}

fn chat_refusing() -> Chat<MemoryStore, ScriptedModel> {
    chat(ScriptedModel {
        refuse_submit: true,
        ..ScriptedModel::default()
    })
}

#[tokio::test]
async fn a_stop_ends_an_attached_client_with_message_cancelled() {
    let chat = streaming(PIECES.to_vec(), Ending::Never);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    let gone = Client {
        leave_after: Some(1),
        ..Client::default()
    };
    relay(&chat, started, &gone).await;
    let reply = read(&chat, id).await[1].id;
    // Another instance relays and has saved "Sort ".
    let alive = Progress {
        text: "Sort ".into(),
        relay: "elsewhere".into(),
        beat: chrono::Utc::now(),
    };
    chat.store()
        .save_progress(&alice(), id, reply, "", &alive)
        .await
        .unwrap();
    let attached = chat.find_reply(&alice(), id).await.unwrap();
    let client = Client::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        chat.stop(&alice(), id, deadline).await.unwrap()
    };
    let mut sink = client.clone();
    let (_, stopped) = tokio::join!(chat.attach(attached, None, &mut sink, deadline), stop);
    assert_eq!(stopped.status, MessageStatus::Cancelled);
    assert_eq!(names(&client).first(), Some(&"created"));
    assert_eq!(
        names(&client).last(),
        Some(&"cancelled"),
        "{:?}",
        names(&client)
    );
    assert_eq!(client.deltas(), "Sort ", "what was saved before the stop");
}
