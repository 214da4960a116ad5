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
mod extract;
mod idempotency;
mod models;
mod send;
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
    delete_conversation, get_conversation, list_conversations, rename_conversation, stop_reply,
    CONVERSATIONS_PAGE_DEFAULT, CONVERSATIONS_PAGE_MAX, MESSAGES_PAGE_DEFAULT, MESSAGES_PAGE_MAX,
};
pub use docs::ApiDocs;
pub use error::ApiError;
pub use models::list_models;
pub use send::send_message;
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
