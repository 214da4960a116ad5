//! Share links: `POST` and `GET /api/chat/conversations/{id}/shares`,
//! `DELETE …/shares/{share_id}` (the owner's), and the public read
//! `GET /api/chat/shares/{share_id}` (no token).

use lambda_http::{
    http::{header, HeaderValue, Method, StatusCode},
    Body, Request, Response,
};
use serde::Serialize;

use super::{
    extract::{authenticate, path_conversation_id, path_param},
    handle, json_response, ok_json, ApiError,
};
use crate::{
    app::App,
    domain::{format_timestamp, Share, ShareId, SharedConversation},
    refusal::Refusal,
    store::Store,
};

/// Where a link is read: relative to the API's base URL (the one the
/// client called), which the functions behind API Gateway do not know.
fn url_of(id: &ShareId) -> String {
    format!("/api/chat/shares/{}", id.as_str())
}

#[derive(Serialize)]
struct ShareView {
    share_id: String,
    url: String,
    created_at: String,
}

impl From<Share> for ShareView {
    fn from(s: Share) -> Self {
        Self {
            url: url_of(&s.id),
            share_id: s.id.as_str().to_owned(),
            created_at: format_timestamp(s.created_at),
        }
    }
}

#[derive(Serialize)]
struct ShareList {
    shares: Vec<ShareView>,
}

/// The `{share_id}` of the path; one of another shape names no link.
fn path_share_id(req: &Request) -> Result<ShareId, ApiError> {
    path_param(req, "share_id")
        .and_then(ShareId::parse)
        .ok_or(ApiError::Refused(Refusal::ShareNotFound))
}

/// The owner's side: make a link (201), list them, revoke one (204).
pub async fn conversation_shares<M, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("conversation-shares", app, req, |req, _meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        match *req.method() {
            Method::POST => {
                let share = app.chat.share(&user, id).await?;
                Ok(json_response(StatusCode::CREATED, &ShareView::from(share)))
            }
            Method::DELETE => {
                let share = path_share_id(&req)?;
                app.chat.revoke_share(&user, id, &share).await?;
                let mut resp = Response::new(Body::Empty);
                *resp.status_mut() = StatusCode::NO_CONTENT;
                Ok(resp)
            }
            _ => {
                let shares = app.chat.shares(&user, id).await?;
                let shares = shares.into_iter().map(ShareView::from).collect();
                Ok(ok_json(&ShareList { shares }))
            }
        }
    })
    .await
}

#[derive(Serialize)]
struct SharedView {
    title: String,
    created_at: String,
    messages: Vec<crate::domain::SharedMessage>,
}

impl From<SharedConversation> for SharedView {
    fn from(c: SharedConversation) -> Self {
        Self {
            title: c.title,
            created_at: format_timestamp(c.created_at),
            messages: c.messages,
        }
    }
}

/// How long a reader may keep a shared copy: a revoked link stops showing
/// within this (shared caches keep nothing).
const SHARED_MAX_AGE: &str = "private, max-age=60";

/// The public read: what a link shows, without a token. A link that never
/// existed, was revoked, or whose conversation was deleted is the same 404.
pub async fn read_share<M, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("read-share", app, req, |req, _meta| async move {
        let share = path_share_id(&req)?;
        let copy = app.chat.shared(&share).await?;
        let mut resp = ok_json(&SharedView::from(copy));
        let headers = resp.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(SHARED_MAX_AGE),
        );
        headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
        Ok(resp)
    })
    .await
}
