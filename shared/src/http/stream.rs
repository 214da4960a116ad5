//! `POST /api/chat/send/stream`: the reply as Server-Sent Events while the
//! model writes it. What can refuse the send (token, body, conversation, a
//! reply already pending) is an ordinary JSON error before the stream;
//! after `200` every event is `event: <name>` and one line of JSON.

use crate::store::Store;
use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use futures::channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use http_body::Frame;
use http_body_util::StreamBody;
use lambda_http::{
    http::{header, HeaderValue},
    Request, Response,
};
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;

use super::{
    extract::{authenticate, parse_json, MAX_BODY_BYTES},
    handle,
    send::{send_request, SendResponse},
    ApiError,
};
use crate::{
    app::App,
    chat::{ChatModel, EventSink, SendTimes, StreamEvent},
    domain::format_timestamp,
};

type Chunk = Result<Frame<Bytes>, Infallible>;

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
            };
            // The relay outlives this handler: the runtime streams the body
            // while it writes. It runs in the request's span.
            let relay = async move { app.chat.relay(streaming, &mut sink, meta.deadline).await };
            tokio::spawn(relay.instrument(tracing::Span::current()));
            Ok(event_stream_head())
        }
    })
    .await;
    let (parts, body) = started.into_parts();
    if !body.is_empty() {
        // A refusal: its JSON body, then the end.
        let _ = tx.unbounded_send(Ok(Frame::data(Bytes::copy_from_slice(&body))));
    }
    drop(tx);
    Response::from_parts(parts, StreamBody::new(rx))
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
}

impl Sse {
    fn data(&self, name: &str, data: &impl Serialize) -> String {
        let json = serde_json::to_string(data).expect("events serialize");
        format!("event: {name}\ndata: {json}\n\n")
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
                "message.created",
                &json!({
                    "conversation_id": conversation_id.to_string(),
                    "user_message_id": user_message.id.to_string(),
                    "message_id": reply_id.to_string(),
                    "timestamp": format_timestamp(created_at),
                }),
            ),
            StreamEvent::Delta(text) => self.data("message.delta", &json!({ "text": text })),
            StreamEvent::KeepAlive => ": keep-alive\n\n".to_owned(),
            StreamEvent::Completed(outcome) => {
                self.data("message.completed", &SendResponse::from(outcome))
            }
            StreamEvent::Failed(e) => {
                let error = ApiError::from(e);
                error.log();
                self.data("error", &error.body(&self.request_id))
            }
            StreamEvent::Cancelled {
                message_id,
                content,
            } => self.data(
                "message.cancelled",
                &json!({"message_id": message_id.to_string(), "content": content}),
            ),
        };
        self.tx
            .unbounded_send(Ok(Frame::data(Bytes::from(frame))))
            .is_ok()
    }
}
