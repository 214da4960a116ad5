//! `GET /api/chat/usage`: the caller's day against their quotas.

use crate::store::Store;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use super::{extract::authenticate, handle, ok_json};
use crate::{app::App, chat::UsageReport, domain::format_timestamp};

#[derive(Serialize)]
struct UsageResponse {
    /// The UTC day, `YYYY-MM-DD`.
    day: String,
    messages: u64,
    message_limit: Option<u64>,
    tokens: u64,
    reserved_tokens: u64,
    token_limit: Option<u64>,
    resets_at: String,
}

impl From<UsageReport> for UsageResponse {
    fn from(r: UsageReport) -> Self {
        Self {
            day: r.day.format("%Y-%m-%d").to_string(),
            messages: r.used.messages,
            message_limit: r.limits.messages,
            tokens: r.used.tokens,
            reserved_tokens: r.used.reserved,
            token_limit: r.limits.tokens,
            resets_at: format_timestamp(r.resets_at),
        }
    }
}

/// What the caller used today and may use.
pub async fn get_usage<M, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("get-usage", app, req, |req, _meta| async move {
        let user = authenticate(app, &req)?;
        let report = app.chat.usage(&user).await?;
        Ok(ok_json(&UsageResponse::from(report)))
    })
    .await
}
