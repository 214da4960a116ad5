//! `POST /api/chat/runpod/webhook/{token}`: RunPod delivers a finished job.

use crate::store::Store;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use super::{
    extract::{parse_json, path_param, MAX_WEBHOOK_BYTES},
    handle, ok_json, ApiError,
};
use crate::{
    app::App,
    auth::AuthError,
    chat::{ChatModel, JobDelivery, WebhookResult},
    runpod::Job,
    webhook::WebhookTokenError,
};

/// Where RunPod posts: the path under the webhook base URL.
const WEBHOOK_PATH: &str = "/api/chat/runpod/webhook/";

/// The token of the request's path: the route's `{token}` behind the HTTP
/// API or `cargo lambda watch`, else the path's last segment, as a
/// function URL (which routes nothing) delivers it. Anything else is
/// empty, which no token check accepts.
fn webhook_token(req: &Request) -> &str {
    if let Some(token) = path_param(req, "token") {
        return token;
    }
    let tail = req.uri().path().strip_prefix(WEBHOOK_PATH);
    tail.filter(|t| !t.contains('/')).unwrap_or_default()
}

#[derive(Serialize)]
struct WebhookResponse {
    /// Whether the reply is now final.
    stored: bool,
}

/// Completes the reply its token names with the job's result as RunPod's
/// `status` gives it (never the delivered body's). No JWT: RunPod cannot
/// send one; the signed, expiring token in the path is the authorization,
/// checked before any read or write.
pub async fn runpod_webhook<M: ChatModel, S: Store>(
    app: &App<M, S>,
    req: Request,
) -> Response<Body> {
    handle("runpod-webhook", app, req, |req, meta| async move {
        let token = webhook_token(&req);
        let target = app.chat.webhooks().verify(token).map_err(|e| {
            ApiError::Unauthorized(match e {
                WebhookTokenError::Expired => AuthError::ExpiredWebhookToken,
                WebhookTokenError::Invalid => AuthError::BadWebhookToken,
            })
        })?;
        let span = tracing::Span::current();
        span.record("user", app.auth.log_id(&target.user));
        span.record("conversation_id", target.conversation.to_string());
        let job: Job = parse_json(&req, MAX_WEBHOOK_BYTES)?;
        let delivery = JobDelivery::try_from(job)
            .map_err(|e| ApiError::bad_request("invalid_job", e.to_string()))?;
        let result = app
            .chat
            .receive_webhook(&target, delivery, meta.deadline)
            .await?;
        Ok(ok_json(&WebhookResponse {
            stored: result == WebhookResult::Stored,
        }))
    })
    .await
}
