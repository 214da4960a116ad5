//! Streamed sends and stops against the in-memory store and a scripted
//! model whose streaming jobs write one piece per look.

use std::sync::Arc;

use super::*;
use crate::chat::{EventSink, StreamEvent, StreamingReply};

/// Collects events; with `leave_after`, the client goes away after that many.
#[derive(Clone, Default)]
pub(super) struct Client {
    pub(super) events: Arc<Mutex<Vec<StreamEvent>>>,
    pub(super) leave_after: Option<usize>,
}

impl EventSink for Client {
    fn send(&mut self, event: StreamEvent) -> bool {
        let mut events = self.events.lock().unwrap();
        events.push(event);
        self.leave_after.is_none_or(|n| events.len() < n)
    }
}

impl Client {
    pub(super) fn deltas(&self) -> String {
        let events = self.events.lock().unwrap();
        let texts = events.iter().filter_map(|e| match e {
            StreamEvent::Delta(text) => Some(text.as_str()),
            _ => None,
        });
        texts.collect()
    }

    fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    fn last(&self) -> String {
        format!("{:?}", self.events.lock().unwrap().last())
    }
}

pub(super) fn streaming(
    pieces: Vec<&'static str>,
    ending: Ending,
) -> Chat<MemoryStore, ScriptedModel> {
    let model = ScriptedModel::default();
    *model.stream_next.lock().unwrap() = Some((pieces, ending));
    chat(model)
}

pub(super) async fn start(
    chat: &Chat<MemoryStore, ScriptedModel>,
    conversation_id: Option<ConversationId>,
) -> StreamingReply {
    let request = SendRequest {
        conversation_id,
        kind: SendKind::Message(
            MessageContent::parse("How do I organize patient files?".into(), 1000).unwrap(),
        ),
        settings: SettingsPatch::default(),
    };
    chat.start_streaming(&alice(), request, times())
        .await
        .unwrap()
}

pub(super) async fn relay(
    chat: &Chat<MemoryStore, ScriptedModel>,
    started: StreamingReply,
    client: &Client,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    chat.relay(started, &mut client.clone(), deadline).await;
}

#[tokio::test]
async fn pieces_arrive_in_order_and_add_up_to_the_stored_reply() {
    let chat = streaming(vec!["Sort ", "them ", "by patient."], Ending::Completes);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    let stored = chat.store().messages(&alice(), id);
    assert_eq!(stored.len(), 1, "the question is stored before any event");
    assert!(chat.model().submitted().is_empty(), "no job yet");
    let client = Client::default();
    relay(&chat, started, &client).await;
    let written = client.deltas();
    assert_eq!(client.count(), 5, "created, three deltas, completed");
    let events = std::mem::take(&mut *client.events.lock().unwrap());
    assert!(
        matches!(events[0], StreamEvent::Created { .. }),
        "{events:?}"
    );
    let Some(StreamEvent::Completed(out)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(written, "Sort them by patient.");
    assert_eq!(out.reply.content, written);
    let stored = read(&chat, id).await;
    assert_eq!(stored[1].content, written);
    assert_eq!(stored[1].status, MessageStatus::Complete);
}

#[tokio::test]
async fn deltas_stop_at_the_longest_reply_kept_and_still_add_up() {
    let long = "x".repeat(30);
    let long: &'static str = Box::leak(long.into_boxed_str());
    let chat = streaming(vec![long, long], Ending::Completes);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    let client = Client::default();
    relay(&chat, started, &client).await;
    let stored = &read(&chat, id).await[1];
    assert_eq!(client.deltas().chars().count(), LIMITS.max_reply_chars);
    assert_eq!(stored.content, client.deltas());
    assert!(stored.truncated);
}

#[tokio::test]
async fn a_failure_mid_stream_is_an_error_event_and_the_question_is_kept() {
    let chat = streaming(vec!["Sort "], Ending::Fails);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    let client = Client::default();
    relay(&chat, started, &client).await;
    assert!(
        client.last().contains("Failed(Model(Failed"),
        "{}",
        client.last()
    );
    let stored = read(&chat, id).await;
    assert_eq!(stored[0].content, "How do I organize patient files?");
    assert!(matches!(stored[1].status, MessageStatus::Failed { .. }));
    chat.model()
        .next
        .lock()
        .unwrap()
        .replace(Script::Reply("again"));
    assert!(
        send(&chat, Some(id), "retry").await.is_ok(),
        "the conversation takes the next send"
    );
}

#[tokio::test]
async fn a_client_that_leaves_leaves_the_reply_pending_for_a_read_to_complete() {
    let chat = streaming(vec!["Sort ", "them"], Ending::Completes);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    let client = Client {
        leave_after: Some(2),
        ..Client::default()
    };
    relay(&chat, started, &client).await;
    assert_eq!(client.count(), 2, "nothing is sent after the client left");
    assert!(chat.store().messages(&alice(), id)[1].is_pending());
    chat.model().set("job-1", Script::Reply("Sort them"));
    let stored = read(&chat, id).await;
    assert_eq!(stored[1].status, MessageStatus::Complete);
    assert_eq!(stored[1].content, "Sort them");
}

#[tokio::test]
async fn a_stop_during_a_stream_keeps_what_was_written_and_frees_the_conversation() {
    let pieces = vec!["Sort ", "them ", "by ", "patient ", "and "];
    let chat = streaming(pieces, Ending::Never);
    let started = start(&chat, None).await;
    let (id, reply_id) = (started.conversation_id, started.reply.id);
    let client = Client::default();
    let stopper = async {
        while client.deltas().len() < "Sort them ".len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        chat.stop(&alice(), id, Instant::now() + Duration::from_secs(1))
            .await
    };
    let ((), stopped) = tokio::join!(relay(&chat, started, &client), stopper);
    let stopped = stopped.unwrap();
    assert_eq!(stopped.status, MessageStatus::Cancelled);
    assert_eq!(chat.model().cancelled(), ["job-1"]);
    let written = client.deltas();
    assert!(written.starts_with("Sort them "), "{written}");
    let events = std::mem::take(&mut *client.events.lock().unwrap());
    let Some(StreamEvent::Cancelled {
        message_id,
        content,
    }) = events.last()
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        (*message_id, content.as_str()),
        (reply_id, written.as_str())
    );
    let stored = read(&chat, id).await;
    assert_eq!(stored[1].status, MessageStatus::Cancelled);
    assert_eq!(stored[1].content, written);
    // Issue 23: a stop does not dodge the count. The stopped reply counts
    // its prompt (32 characters: 8 tokens by the estimate) and what it
    // wrote before the stop, once.
    let used = chat.usage(&alice()).await.unwrap().used;
    let wrote = (written.len() as u64).div_ceil(4);
    assert_eq!((used.tokens, used.reserved), (8 + wrote, 0), "{written:?}");
    // The next send goes, and the stopped reply is not in its history.
    chat.model()
        .next
        .lock()
        .unwrap()
        .replace(Script::Reply("ok"));
    send(&chat, Some(id), "next").await.unwrap();
    let history = chat.model().submitted().last().unwrap().clone();
    // The stopped reply is not history; the two questions are one user
    // turn, so roles still alternate.
    assert_eq!(history, ["How do I organize patient files?\n\nnext"]);
}

#[tokio::test]
async fn a_stop_ends_a_pending_reply_and_nothing_to_stop_is_409() {
    let chat = chat(ScriptedModel::with(Script::Running));
    let out = send(&chat, None, "hello").await.unwrap();
    let id = out.conversation_id;
    let deadline = Instant::now() + Duration::from_secs(1);
    let stopped = chat.stop(&alice(), id, deadline).await.unwrap();
    assert_eq!((stopped.id, stopped.content.as_str()), (out.reply.id, ""));
    assert_eq!(stopped.status, MessageStatus::Cancelled);
    assert_eq!(chat.model().cancelled(), ["job-1"]);
    assert_eq!(read(&chat, id).await[1].status, MessageStatus::Cancelled);
    // The prompt ("hello": 2 tokens by the estimate) counts; nothing was shown.
    assert_eq!(chat.usage(&alice()).await.unwrap().used.tokens, 2);
    let again = chat.stop(&alice(), id, deadline).await;
    assert!(matches!(
        again,
        Err(ChatError::Refused(Refusal::NoReplyInProgress))
    ));
    let unknown = chat.stop(&alice(), ConversationId::new(), deadline).await;
    assert!(matches!(
        unknown,
        Err(ChatError::Refused(Refusal::NotFound))
    ));
}

/// On paused time: a job that writes nothing for a minute.
#[tokio::test(start_paused = true)]
async fn silence_gets_keep_alives_and_the_deadline_ends_the_stream_leaving_the_reply_pending() {
    let chat = streaming(vec!["Sort "], Ending::Never);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    let client = Client::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    chat.relay(started, &mut client.clone(), deadline).await;
    let events = std::mem::take(&mut *client.events.lock().unwrap());
    let keep_alives = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::KeepAlive))
        .count();
    // One at least every 15 s of the ~60 s of silence.
    assert!((4..=6).contains(&keep_alives), "{events:?}");
    assert!(
        matches!(events.last(), Some(StreamEvent::Retry)),
        "the deadline says reconnect, and no last event: {events:?}"
    );
    assert!(chat.store().messages(&alice(), id)[1].is_pending());
}

/// On paused time: RunPod's `run` answers 429 for 40 s. The client hears
/// `message.created` at once, then a keep-alive at least every 15 s.
#[tokio::test(start_paused = true)]
async fn a_slow_submission_starts_the_stream_at_once_and_keeps_it_alive() {
    let model = ScriptedModel {
        submit_delay: Duration::from_secs(40),
        ..ScriptedModel::default()
    };
    *model.stream_next.lock().unwrap() = Some((vec!["Sort them."], Ending::Completes));
    let chat = chat(model);
    let started = start(&chat, None).await;
    let begun = Instant::now();
    let client = Stamped::default();
    let deadline = begun + Duration::from_secs(120);
    chat.relay(started, &mut client.clone(), deadline).await;
    let events = std::mem::take(&mut *client.events.lock().unwrap());
    let (first_at, first) = &events[0];
    assert!(matches!(first, StreamEvent::Created { .. }), "{events:?}");
    assert_eq!(*first_at, Duration::ZERO, "created before the submission");
    let mut last = Duration::ZERO;
    for (at, _) in &events {
        assert!(
            *at - last <= Duration::from_secs(15),
            "silent from {last:?} to {at:?}: {events:?}"
        );
        last = *at;
    }
    let keep_alives = events
        .iter()
        .filter(|(_, e)| matches!(e, StreamEvent::KeepAlive));
    // At 10, 20 and 30 s; at 40 s the submission and the next one are due
    // together, and either may go first.
    let keep_alives = keep_alives.count();
    assert!(
        (3..=4).contains(&keep_alives),
        "every 10 s of the 40 s: {events:?}"
    );
    assert!(
        matches!(events.last(), Some((_, StreamEvent::Completed(_)))),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_client_gone_at_created_still_gets_its_reply_submitted_and_recorded() {
    let chat = streaming(vec!["Sort them."], Ending::Completes);
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    let client = Client {
        leave_after: Some(1),
        ..Client::default()
    };
    relay(&chat, started, &client).await;
    assert_eq!(client.count(), 1);
    assert_eq!(chat.model().submitted().len(), 1);
    assert!(chat.store().messages(&alice(), id)[1].is_pending());
}

#[tokio::test]
async fn a_refused_submission_is_an_error_event_after_created_and_frees_the_conversation() {
    let chat = chat(ScriptedModel {
        refuse_submit: true,
        ..ScriptedModel::default()
    });
    let started = start(&chat, None).await;
    let id = started.conversation_id;
    let client = Client::default();
    relay(&chat, started, &client).await;
    let events = std::mem::take(&mut *client.events.lock().unwrap());
    assert!(
        matches!(events[0], StreamEvent::Created { .. }),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(StreamEvent::Failed(_))),
        "{events:?}"
    );
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        chat.store().messages(&alice(), id).len(),
        1,
        "the question is kept"
    );
    // The claim is released: the next send is not refused as pending.
    let next = send(&chat, Some(id), "again").await;
    assert!(matches!(next, Err(ChatError::Model(_))), "{next:?}");
}

/// Events with the (paused) time each arrived after the first.
#[derive(Clone, Default)]
struct Stamped {
    events: Arc<Mutex<Vec<(Duration, StreamEvent)>>>,
    start: Arc<Mutex<Option<Instant>>>,
}

impl EventSink for Stamped {
    fn send(&mut self, event: StreamEvent) -> bool {
        let start = *self.start.lock().unwrap().get_or_insert_with(Instant::now);
        self.events.lock().unwrap().push((start.elapsed(), event));
        true
    }
}
