//! `POST /api/chat/runpod/webhook/{token}`: RunPod delivers a finished job.

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

#[derive(Serialize)]
struct WebhookResponse {
    /// Whether the reply is now final.
    stored: bool,
}

/// Completes the reply its token names with the job's result as RunPod's
/// `status` gives it (never the delivered body's). No JWT: RunPod cannot
/// send one; the signed, expiring token in the path is the authorization,
/// checked before any read or write.
pub async fn runpod_webhook<M: ChatModel>(app: &App<M>, req: Request) -> Response<Body> {
    handle("runpod-webhook", app, req, |req, meta| async move {
        let token = path_param(&req, "token").unwrap_or_default();
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
