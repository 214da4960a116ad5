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
    chat::{JobDelivery, WebhookResult},
    runpod::Job,
};

#[derive(Serialize)]
struct WebhookResponse {
    /// Whether the reply is now final.
    stored: bool,
}

/// Stores the delivered job on the reply its token names. No JWT: RunPod
/// cannot send one; the signed token in the path is the authorization,
/// checked before any read or write.
pub async fn runpod_webhook<M>(app: &App<M>, req: Request) -> Response<Body> {
    handle("runpod-webhook", app, req, |req, _meta| async move {
        let target = path_param(&req, "token")
            .and_then(|token| app.chat.webhooks().verify(token))
            .ok_or(ApiError::Unauthorized(AuthError::BadWebhookToken))?;
        let span = tracing::Span::current();
        span.record("user", app.auth.log_id(&target.user));
        span.record("conversation_id", target.conversation.to_string());
        let job: Job = parse_json(&req, MAX_WEBHOOK_BYTES)?;
        let delivery = JobDelivery::try_from(job)
            .map_err(|e| ApiError::bad_request("invalid_job", e.to_string()))?;
        let result = app.chat.receive_webhook(&target, delivery).await?;
        Ok(ok_json(&WebhookResponse {
            stored: result == WebhookResult::Stored,
        }))
    })
    .await
}
