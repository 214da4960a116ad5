//! Issue 27: attaching to a reply through the handlers, against DynamoDB
//! Local and the local RunPod endpoint (which writes a streaming job's
//! chunks over its execution time and hands each out once, as RunPod's
//! `stream` does). A client that drops its connection drops the response
//! body, as the Lambda runtime does when the caller goes away.

use std::time::Duration;

use crate::common::{self, error_code, read, token, Event};
use chat_service_dev::runpod_local::{LocalRunPod, Settings, DEV_REPLY_PREFIX};
use chat_shared::{
    chat::{EventSink, SendKind, SendRequest, SendTimes, StreamEvent},
    domain::{ConversationId, MessageContent, SettingsPatch, UserId},
    http,
    runpod::RunPodClient,
    App,
};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;

type Body = http::SseBody;

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    name: String,
    data: Value,
}

/// Reads events off a streamed body, frame by frame.
struct Events {
    body: Body,
    buf: String,
    /// The stream said `retry:` (it ends before the reply does).
    retry: bool,
}

impl Events {
    fn of(resp: lambda_http::Response<http::SseBody>) -> Self {
        assert_eq!(resp.status(), 200);
        Self {
            body: resp.into_body(),
            buf: String::new(),
            retry: false,
        }
    }

    /// The next event (keep-alives and `retry:` skipped); `None` at the end.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                self.retry |= block.starts_with("retry: 1000\n");
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name));
                let (Some(name), Some(data)) = (field("event: "), field("data: ")) else {
                    continue;
                };
                return Some(Sse {
                    id: field("id: ").map(|i| i.parse().unwrap()),
                    name: name.to_owned(),
                    data: serde_json::from_str(data).unwrap(),
                });
            }
            let frame = self.body.frame().await?.unwrap();
            let data = frame.into_data().unwrap();
            self.buf.push_str(std::str::from_utf8(&data).unwrap());
        }
    }

    async fn rest(mut self) -> Vec<Sse> {
        let mut all = vec![];
        while let Some(e) = self.next().await {
            all.push(e);
        }
        all
    }
}

fn deltas(events: &[Sse]) -> String {
    events
        .iter()
        .filter(|e| e.name == "message.delta")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect()
}

struct Stack {
    app: Arc<App<RunPodClient>>,
    runpod: LocalRunPod,
}

impl Stack {
    async fn new(execution_time: Duration) -> Self {
        Self::with(execution_time, &[]).await
    }

    async fn with(execution_time: Duration, extra: &[(&str, &str)]) -> Self {
        let runpod = LocalRunPod::new(Settings {
            api_key: Some("test-runpod-key".into()),
            execution_time,
            ..Settings::default()
        });
        let url = runpod.clone().spawn().await;
        let client = common::dynamo().await;
        let table = common::fresh_table(&client).await;
        let config = common::config_with(&table, extra);
        let model = RunPodClient::new(common::runpod_config(&url, &[])).unwrap();
        Self {
            app: Arc::new(App::new(config, client).with_model(model)),
            runpod,
        }
    }

    async fn stream(&self, question: &str) -> Events {
        let body = json!({ "message": question }).to_string();
        let req = Event::send_stream(&body, Some(token("alice"))).request();
        Events::of(http::stream_message(self.app.clone(), req).await)
    }

    async fn attach(&self, id: &str, last: Option<u64>) -> Events {
        let mut event = Event::attach(id, Some(token("alice")));
        if let Some(n) = last {
            event = event.header("last-event-id", &n.to_string());
        }
        Events::of(http::attach_stream(self.app.clone(), event.request()).await)
    }

    async fn stored_reply(&self, id: &str) -> Value {
        let event = Event::get(id, Some(token("alice")));
        let (status, body) = read(http::get_conversation(&self.app, event.request()).await);
        assert_eq!(status, 200, "{body}");
        body["messages"][1].clone()
    }
}

const QUESTION: &str = "How do I organize patient files so that the team finds each one quickly?";

fn echo() -> String {
    format!("{DEV_REPLY_PREFIX} You said: {QUESTION}")
}

#[tokio::test]
async fn ids_count_characters_and_a_final_reply_replays_from_any_id() {
    let s = Stack::new(Duration::from_millis(300)).await;
    let events = s.stream(QUESTION).await.rest().await;
    let ids: Vec<u64> = events.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids[0], 0, "message.created is 0: {events:?}");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {ids:?}"
    );
    let text = deltas(&events);
    assert_eq!(text, echo());
    let last = events.last().unwrap();
    assert_eq!(last.name, "message.completed");
    assert_eq!(last.id, Some(text.chars().count() as u64 + 1));
    let id = last.data["conversation_id"].as_str().unwrap().to_owned();

    let whole = s.attach(&id, None).await.rest().await;
    let names: Vec<&str> = whole.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["message.created", "message.delta", "message.completed"]
    );
    assert_eq!(deltas(&whole), text);
    assert_eq!(whole[0].data["message_id"], last.data["message_id"]);

    let rest = s.attach(&id, Some(5)).await.rest().await;
    assert_eq!(rest[0].name, "message.delta");
    assert_eq!(format!("{}{}", &text[..5], deltas(&rest)), text);

    let end = s.attach(&id, Some(text.len() as u64)).await.rest().await;
    assert_eq!(end.len(), 1, "only the last event: {end:?}");
    assert_eq!(end[0].name, "message.completed");
    assert_eq!(end[0].data["message"], text.as_str());

    // ?after= for clients that cannot set the header.
    let event = Event::attach(&id, Some(token("alice"))).query("after", "10");
    let resp = http::attach_stream(s.app.clone(), event.request()).await;
    let after = Events::of(resp).rest().await;
    assert_eq!(format!("{}{}", &text[..10], deltas(&after)), text);
}

#[tokio::test]
async fn a_client_that_drops_its_stream_again_and_again_gets_every_piece_once() {
    let s = Stack::new(Duration::from_secs(3)).await;
    let mut events = s.stream(QUESTION).await;
    let created = events.next().await.unwrap();
    let id = created.data["conversation_id"].as_str().unwrap().to_owned();
    let (mut text, mut last, mut reconnects) = (String::new(), 0, 0);
    let final_event: Sse;
    // Three deltas a connection, then it drops (the body is dropped).
    'connections: loop {
        let mut seen = 0;
        while let Some(e) = events.next().await {
            last = e.id.unwrap();
            match e.name.as_str() {
                "message.delta" => {
                    text.push_str(e.data["text"].as_str().unwrap());
                    assert_eq!(
                        last,
                        text.chars().count() as u64,
                        "an id is the length so far"
                    );
                    seen += 1;
                }
                "message.completed" => {
                    final_event = e;
                    break 'connections;
                }
                other => panic!("{other}: {e:?}"),
            }
            if seen == 3 {
                break;
            }
        }
        drop(events);
        reconnects += 1;
        assert!(reconnects < 40, "the reply never ended");
        events = s.attach(&id, Some(last)).await;
    }
    assert!(
        reconnects >= 2,
        "several reconnects in one reply ({reconnects})"
    );
    let completed = final_event;
    assert_eq!(text, echo(), "no gap and no repeat");
    assert_eq!(completed.data["message"], text.as_str());
    let stored = s.stored_reply(&id).await;
    assert_eq!(stored["content"], text.as_str());
    assert_eq!(stored["status"], "complete");
    assert_eq!(s.runpod.submissions().len(), 1, "one job");
}

#[tokio::test]
async fn a_reconnect_without_an_id_gets_the_text_so_far_as_one_delta() {
    let s = Stack::new(Duration::from_secs(2)).await;
    let mut events = s.stream(QUESTION).await;
    let id = events.next().await.unwrap().data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut had = String::new();
    for _ in 0..4 {
        let e = events.next().await.unwrap();
        had.push_str(e.data["text"].as_str().unwrap());
    }
    drop(events);
    let mut again = s.attach(&id, None).await;
    assert_eq!(again.next().await.unwrap().name, "message.created");
    let so_far = again.next().await.unwrap();
    assert_eq!(so_far.name, "message.delta");
    let so_far_text = so_far.data["text"].as_str().unwrap();
    // What the relay saved last: at most SAVE_EVERY (250 ms) behind what
    // the dropped client had, and never anything else.
    assert!(
        !so_far_text.is_empty() && echo().starts_with(so_far_text),
        "{so_far_text:?}"
    );
    assert!(echo().starts_with(&had), "{had:?}");
    let rest = again.rest().await;
    assert_eq!(format!("{so_far_text}{}", deltas(&rest)), echo());
}

#[tokio::test]
async fn a_reply_pending_after_a_202_ends_with_completed_when_attached() {
    // The send waits 0.2 s for a job that takes 1.5 s: 202.
    let s = Stack::with(Duration::from_millis(1500), &[("SEND_WAIT_SECONDS", "0.2")]).await;
    let body = json!({ "message": QUESTION }).to_string();
    let req = Event::send(&body, Some(token("alice"))).request();
    let (status, sent) = read(http::send_message(&s.app, req).await);
    let id = sent["conversation_id"].as_str().unwrap().to_owned();
    if status == 202 {
        let events = s.attach(&id, None).await.rest().await;
        assert_eq!(events[0].name, "message.created");
        let last = events.last().unwrap();
        assert_eq!(last.name, "message.completed", "{events:?}");
        assert_eq!(last.data["message"], echo().as_str());
        assert_eq!(deltas(&events), echo());
    } else {
        panic!("the send did not answer 202 ({status}): {sent}");
    }
}

#[tokio::test]
async fn another_users_attach_is_404_and_a_conversation_without_a_reply_409() {
    let s = Stack::new(Duration::from_millis(50)).await;
    let events = s.stream(QUESTION).await.rest().await;
    let id = events[0].data["conversation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = Event::attach(&id, Some(token("bob")));
    let resp = http::attach_stream(s.app.clone(), event.request()).await;
    assert_eq!(resp.status(), 404);
    let unknown = ConversationId::new().to_string();
    let event = Event::attach(&unknown, Some(token("alice"))).query("after", "0");
    let resp = http::attach_stream(s.app.clone(), event.request()).await;
    assert_eq!(resp.status(), 404);
    // A refusal's body is its JSON, and then the response ends.
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await;
    let body: Value =
        serde_json::from_slice(&body.expect("the body ends").unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    let event = Event::attach(&id, Some(token("alice"))).header("last-event-id", "x");
    let resp = http::attach_stream(s.app.clone(), event.request()).await;
    assert_eq!(resp.status(), 400);
    // Past the contract's bound (nine digits), in either place, whatever
    // the other says (Schemathesis: `?after=1000000000` with a good header).
    let too_far = "1000000000";
    for event in [
        Event::attach(&id, Some(token("alice"))).query("after", too_far),
        Event::attach(&id, Some(token("alice")))
            .header("last-event-id", "0")
            .query("after", too_far),
        Event::attach(&id, Some(token("alice"))).header("last-event-id", too_far),
        Event::attach(&id, Some(token("alice"))).query("after", "-1"),
    ] {
        let resp = http::attach_stream(s.app.clone(), event.request()).await;
        assert_eq!(resp.status(), 400);
    }

    // A conversation whose last message has no reply: stored directly.
    let alice = UserId::parse("alice").unwrap();
    let first = chat_shared::domain::Message::new(
        chat_shared::domain::Role::User,
        "unanswered".into(),
        chrono::Utc::now(),
    );
    let c = chat_shared::domain::Conversation::started_with(
        chat_shared::domain::Title::from_stored("t".into()),
        &first,
    );
    s.app
        .chat
        .store()
        .create_conversation(&alice, &c, &first)
        .await
        .unwrap();
    let event = Event::attach(&c.id.to_string(), Some(token("alice")));
    let resp = http::attach_stream(s.app.clone(), event.request()).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let status = parts.status.as_u16();
    assert_eq!(error_code(status, &body, 409), "no_reply_in_progress");
}

#[tokio::test]
async fn a_reply_longer_than_a_functions_time_is_followed_to_its_end_with_retry() {
    // Each request has 1 s; the job writes its reply over 4 s.
    let budget = [("REQUEST_BUDGET_SECS", "1"), ("DEADLINE_MARGIN_MS", "0")];
    let s = Stack::with(Duration::from_secs(4), &budget).await;
    let mut events = s.stream(QUESTION).await;
    let created = events.next().await.unwrap();
    let id = created.data["conversation_id"].as_str().unwrap().to_owned();
    let (mut text, mut last, mut connections) = (String::new(), 0, 1);
    let completed = loop {
        let mut ended = None;
        while let Some(e) = events.next().await {
            last = e.id.unwrap();
            match e.name.as_str() {
                "message.delta" => text.push_str(e.data["text"].as_str().unwrap()),
                _ => {
                    ended = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = ended {
            break e;
        }
        assert!(
            events.retry,
            "a stream cut at its deadline says retry: first"
        );
        connections += 1;
        assert!(connections < 20, "the reply never ended");
        events = s.attach(&id, Some(last)).await;
    };
    assert!(
        connections >= 3,
        "the reply outlasted several functions ({connections})"
    );
    assert_eq!(completed.name, "message.completed", "{:?}", completed.data);
    assert_eq!(
        text,
        echo(),
        "no gap and no repeat across {connections} connections"
    );
    assert_eq!(completed.data["message"], text.as_str());
    assert_eq!(s.stored_reply(&id).await["content"], text.as_str());
    assert_eq!(s.runpod.submissions().len(), 1);
}

/// What a relay sends, as a channel (the test reads it while it runs).
struct Channel(futures::channel::mpsc::UnboundedSender<StreamEvent>);

impl EventSink for Channel {
    fn send(&mut self, event: StreamEvent) -> bool {
        self.0.unbounded_send(event).is_ok()
    }
}

/// The instance relaying a reply dies mid-reply: its task is aborted, as a
/// killed process stops (no let-go; its progress item still names it, with
/// a beat that ages). An attach follows its saved text until the beat is
/// 10 s old, takes the relay over, and the reply completes whole: the job's
/// whole output, pieces the dead relay read and never saved included.
#[tokio::test]
async fn a_relay_that_dies_mid_reply_is_taken_over_and_the_reply_completes() {
    use futures::StreamExt;
    let s = Stack::new(Duration::from_secs(3)).await;
    let alice = UserId::parse("alice").unwrap();
    let request = SendRequest {
        conversation_id: None,
        kind: SendKind::Message(MessageContent::parse(QUESTION.into(), 10_000).unwrap()),
        settings: SettingsPatch::default(),
    };
    let far = tokio::time::Instant::now() + Duration::from_secs(60);
    let times = SendTimes {
        wait_until: far,
        deadline: far,
    };
    let streaming = s
        .app
        .chat
        .start_streaming(&alice, request, times)
        .await
        .unwrap();
    let id = streaming.conversation_id;
    let (tx, mut rx) = futures::channel::mpsc::unbounded();
    let app = s.app.clone();
    let relay = tokio::spawn(async move { app.chat.relay(streaming, &mut Channel(tx), far).await });
    let mut had = String::new();
    let mut deltas = 0;
    while deltas < 3 {
        if let StreamEvent::Delta(text) = rx.next().await.expect("the relay's events") {
            had.push_str(&text);
            deltas += 1;
        }
    }
    relay.abort();
    assert!(relay.await.unwrap_err().is_cancelled());
    let started = std::time::Instant::now();
    let events = s
        .attach(&id.to_string(), Some(had.chars().count() as u64))
        .await
        .rest()
        .await;
    let last = events.last().expect("events after the relay died");
    assert_eq!(last.name, "message.completed", "{:?}", last.data);
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "taken over only once the dead relay's beat aged ({:?})",
        started.elapsed()
    );
    assert_eq!(last.data["message"], echo().as_str());
    let stored = s.stored_reply(&id.to_string()).await;
    assert_eq!(stored["content"], echo().as_str());
    assert_eq!(stored["status"], "complete");
    assert_eq!(s.runpod.submissions().len(), 1, "one job");
}
