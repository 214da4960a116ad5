//! The HTTP edge: the runtime adaptor and the request span here; the one
//! error-to-response mapping in [`error`]; what a request carries (token,
//! body, query, path) in [`extract`]; one file per group of handlers.
//!
//! Every handler returns a response, never an error: a bad request is a 4xx
//! with a JSON body, not a failed Lambda invocation (which API Gateway would
//! turn into a bare 502).

mod conversations;
mod docs;
mod error;
mod export;
mod extract;
mod idempotency;
mod models;
mod send;
mod shares;
mod stream;
mod usage;
mod webhook;

use std::future::Future;

use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    service_fn, Body, Request, Response,
};
use serde::Serialize;
use tracing::{field::Empty, Instrument};

pub use conversations::{
    delete_conversation, get_conversation, list_conversations, message_feedback,
    rename_conversation, stop_reply, CONVERSATIONS_PAGE_DEFAULT, CONVERSATIONS_PAGE_MAX,
    MESSAGES_PAGE_DEFAULT, MESSAGES_PAGE_MAX,
};
pub use docs::ApiDocs;
pub use error::ApiError;
pub use export::{export_all, export_conversation, NdjsonBody};
pub use models::list_models;
pub use send::send_message;
pub use shares::{conversation_shares, read_share};
pub use stream::{attach_stream, stream_message, SseBody};
pub use usage::get_usage;
pub use webhook::runpod_webhook;

use crate::app::App;
use extract::RequestMeta;

/// Runs a handler on the Lambda runtime (or under `cargo lambda watch`).
pub async fn run<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response<Body>> + Send,
{
    lambda_http::run(service_fn(move |req| {
        let response = handler(req);
        async move { Ok::<_, lambda_http::Error>(response.await) }
    }))
    .await
}

/// Runs `inner` inside the request's span and turns its result into a response.
async fn handle<M, S, Fut>(
    name: &'static str,
    app: &App<M, S>,
    req: Request,
    inner: impl FnOnce(Request, RequestMeta) -> Fut,
) -> Response<Body>
where
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let meta = RequestMeta::of(&req, &app.config);
    let request_id = meta.request_id.clone();
    let span = tracing::info_span!(
        "request",
        handler = name,
        request_id = %request_id,
        // A pseudonym, never the token's `sub` ([`crate::auth::Authenticator::log_id`]).
        user = Empty,
        conversation_id = Empty
    );
    async move {
        let started = std::time::Instant::now();
        let response = match inner(req, meta).await {
            Ok(response) => response,
            Err(e) => {
                e.log();
                e.into_response(&request_id)
            }
        };
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        );
        response
    }
    .instrument(span)
    .await
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn ok_json(body: &impl Serialize) -> Response<Body> {
    json_response(StatusCode::OK, body)
}

/// Serves a streaming function (its responses are [`SseBody`] or
/// [`NdjsonBody`]) until the
/// runtime ends. `lambda_runtime` ends its loop when posting a response
/// to the Runtime API fails, and the process with it: `cargo lambda watch`
/// closes that connection when the caller leaves mid-stream, and then
/// never starts the function again (every later request hangs); Lambda
/// would start a new instance, a cold start. The loop starts again
/// instead, so one caller who left costs neither.
pub async fn serve_streaming<F, Fut, B>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Request) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = bytes::Bytes, Error = std::convert::Infallible>
        + Unpin
        + Send
        + 'static,
{
    loop {
        let handler = handler.clone();
        let service = lambda_http::service_fn(move |req: Request| {
            let response = handler(req);
            async move { Ok::<_, lambda_http::Error>(response.await) }
        });
        match lambda_http::run_with_streaming_response(service).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "posting a streamed response to the runtime failed; serving on");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
