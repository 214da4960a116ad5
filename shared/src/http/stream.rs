//! `POST /api/chat/send/stream`: the reply as Server-Sent Events while the
//! model writes it, and `GET /api/chat/conversations/{id}/stream`: the
//! latest reply again, from where a client's `Last-Event-ID` says it is.
//! What can refuse (token, body, conversation, a reply already pending) is
//! an ordinary JSON error before the stream; after `200` every event is
//! `id: <n>`, `event: <name>` and one line of JSON. Ids count the reply's
//! characters: `message.created` is 0, a delta the reply's length after it,
//! the last event one more than the whole reply.

use crate::store::Store;
use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use http_body::Frame;
use http_body_util::StreamBody;
use lambda_http::{
    http::{header, HeaderValue},
    Request, RequestExt, Response,
};
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;

use super::{
    extract::{authenticate, parse_json, path_conversation_id, MAX_BODY_BYTES},
    handle,
    send::{send_request, SendResponse},
    ApiError,
};
use crate::{
    app::App,
    chat::{ChatModel, EventSink, SendTimes, StreamEvent, RECONNECT_AFTER},
    domain::format_timestamp,
};

/// One piece of a streamed body.
pub(super) type Chunk = Result<Frame<Bytes>, Infallible>;

/// The streamed response's body: the frames the relay sends, as they come.
pub type SseBody = StreamBody<UnboundedReceiver<Chunk>>;

/// Sends the user's message and streams the reply as the model writes it.
pub async fn stream_message<M, S>(app: Arc<App<M, S>>, req: Request) -> Response<SseBody>
where
    M: ChatModel + Send + Sync + 'static,
    S: Store + Send + 'static,
{
    let (tx, rx) = unbounded();
    let relay_tx = tx.clone();
    let started = handle("stream-message", &app, req, |req, meta| {
        let app = app.clone();
        async move {
            let user = authenticate(&app, &req)?;
            let body = parse_json(&req, MAX_BODY_BYTES)?;
            let request = send_request(body, app.config.max_message_chars)?;
            let times = SendTimes {
                wait_until: meta.deadline,
                deadline: meta.deadline,
            };
            let streaming = app.chat.start_streaming(&user, request, times).await?;
            let mut sink = Sse {
                tx: relay_tx,
                request_id: meta.request_id.clone(),
                sent: 0,
            };
            // The relay outlives this handler: the runtime streams the body
            // while it writes. It runs in the request's span.
            let relay = async move { app.chat.relay(streaming, &mut sink, meta.deadline).await };
            tokio::spawn(relay.instrument(tracing::Span::current()));
            Ok(event_stream_head())
        }
    })
    .await;
    streamed(started, StreamBody::new(rx), move |refusal| {
        let _ = tx.unbounded_send(refusal);
    })
}

/// Streams the conversation's latest reply: the rest of it after the
/// client's `Last-Event-ID` (or `?after=`), or all of it from
/// `message.created`, live until its last event.
pub async fn attach_stream<M, S>(app: Arc<App<M, S>>, req: Request) -> Response<SseBody>
where
    M: ChatModel + Send + Sync + 'static,
    S: Store + Send + 'static,
{
    let (tx, rx) = unbounded();
    let relay_tx = tx.clone();
    let started = handle("attach-stream", &app, req, |req, meta| {
        let app = app.clone();
        async move {
            let user = authenticate(&app, &req)?;
            let id = path_conversation_id(&req)?;
            let after = last_event_id(&req)?;
            let attached = app.chat.find_reply(&user, id).await?;
            let mut sink = Sse {
                tx: relay_tx,
                request_id: meta.request_id.clone(),
                sent: after.unwrap_or(0),
            };
            let attach = async move {
                app.chat
                    .attach(attached, after, &mut sink, meta.deadline)
                    .await
            };
            tokio::spawn(attach.instrument(tracing::Span::current()));
            Ok(event_stream_head())
        }
    })
    .await;
    streamed(started, StreamBody::new(rx), move |refusal| {
        let _ = tx.unbounded_send(refusal);
    })
}

/// The last event id the client has: the `Last-Event-ID` header (what a
/// browser's `EventSource` sends when it reconnects) or `?after=`; either,
/// when present, must be a whole number.
fn last_event_id(req: &Request) -> Result<Option<usize>, ApiError> {
    // As the contract bounds both: one to nine digits (0 to 999 999 999).
    let number = |raw: &str| {
        let raw = raw.trim();
        let digits = (1..=9).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| raw.parse::<usize>().ok()).flatten().ok_or_else(|| {
            ApiError::bad_request(
                "invalid_last_event_id",
                "Last-Event-ID (or after) must be an event id this stream sent: a whole number below 10^9",
            )
        })
    };
    let header = match req.headers().get("last-event-id") {
        Some(v) => Some(number(v.to_str().unwrap_or("-"))?),
        None => None,
    };
    let query = req.query_string_parameters_ref();
    let after = match query.as_ref().and_then(|q| q.first("after")) {
        Some(raw) => Some(number(raw)?),
        None => None,
    };
    Ok(header.or(after))
}

/// The streamed response from what the handler answered: a refusal's JSON
/// body, which `refuse` puts on the body's channel, and the end; or the
/// 200's head over `body`, which the handler's task writes. `refuse` owns
/// the handler's sender, so it is gone when this returns and the body ends
/// once the task's sender is gone too.
pub(super) fn streamed<B>(
    started: Response<lambda_http::Body>,
    body: B,
    refuse: impl FnOnce(Chunk),
) -> Response<B> {
    let (parts, refusal) = started.into_parts();
    if !refusal.is_empty() {
        refuse(Ok(Frame::data(Bytes::copy_from_slice(&refusal))));
    }
    Response::from_parts(parts, body)
}

/// `200`, `text/event-stream`, not to be cached or buffered on the way.
fn event_stream_head() -> Response<lambda_http::Body> {
    let mut resp = Response::new(lambda_http::Body::Empty);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Writes events as SSE frames into the response body.
struct Sse {
    tx: UnboundedSender<Chunk>,
    request_id: String,
    /// Characters of the reply the client has: the last delta's id.
    sent: usize,
}

impl Sse {
    fn data(&self, id: usize, name: &str, data: &impl Serialize) -> String {
        let json = serde_json::to_string(data).expect("events serialize");
        format!("id: {id}\nevent: {name}\ndata: {json}\n\n")
    }

    /// The last event's id: past every character of the reply.
    fn last_id(&self, content: &str) -> usize {
        self.sent.max(content.chars().count()) + 1
    }
}

impl EventSink for Sse {
    fn send(&mut self, event: StreamEvent) -> bool {
        let frame = match event {
            StreamEvent::Created {
                conversation_id,
                user_message,
                reply_id,
                created_at,
            } => self.data(
                0,
                "message.created",
                &json!({
                    "conversation_id": conversation_id.to_string(),
                    "user_message_id": user_message.id.to_string(),
                    "message_id": reply_id.to_string(),
                    "timestamp": format_timestamp(created_at),
                }),
            ),
            StreamEvent::Delta(text) => {
                self.sent += text.chars().count();
                self.data(self.sent, "message.delta", &json!({ "text": text }))
            }
            StreamEvent::KeepAlive => ": keep-alive\n\n".to_owned(),
            StreamEvent::Completed(outcome) => {
                let id = self.last_id(&outcome.reply.content);
                self.data(id, "message.completed", &SendResponse::from(outcome))
            }
            StreamEvent::Failed(e) => {
                let error = ApiError::from(e);
                error.log();
                self.data(self.sent + 1, "error", &error.body(&self.request_id))
            }
            StreamEvent::Cancelled {
                message_id,
                content,
            } => self.data(
                self.last_id(&content),
                "message.cancelled",
                &json!({"message_id": message_id.to_string(), "content": content}),
            ),
            StreamEvent::Retry => format!("retry: {}\n\n", RECONNECT_AFTER.as_millis()),
        };
        self.tx
            .unbounded_send(Ok(Frame::data(Bytes::from(frame))))
            .is_ok()
    }
}
