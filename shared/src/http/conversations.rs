//! `GET /api/chat/conversations`, and `GET`, `PATCH`, `DELETE
//! /api/chat/conversations/{id}`.

use crate::store::Store;
use lambda_http::{http::StatusCode, Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::{
    extract::{authenticate, page_request, parse_json, path_conversation_id, MAX_BODY_BYTES},
    handle, ok_json, ApiError,
};
use crate::{
    app::App,
    chat::ChatModel,
    domain::{format_timestamp, Conversation, Message, MessageStatus, Title},
    store::Page,
};

/// Conversations per list page when `limit` is not given.
pub const CONVERSATIONS_PAGE_DEFAULT: u32 = 20;
/// Largest `limit` of a list page.
pub const CONVERSATIONS_PAGE_MAX: u32 = 100;
/// Messages per conversation page when `limit` is not given.
pub const MESSAGES_PAGE_DEFAULT: u32 = 50;
/// Largest `limit` of a conversation page.
pub const MESSAGES_PAGE_MAX: u32 = 200;

#[derive(Serialize)]
struct ConversationSummary {
    id: String,
    title: String,
    last_message: String,
    updated_at: String,
    created_at: String,
    message_count: u64,
}

impl From<Conversation> for ConversationSummary {
    fn from(c: Conversation) -> Self {
        Self {
            id: c.id.to_string(),
            title: c.title.as_str().to_owned(),
            last_message: c.last_message,
            updated_at: format_timestamp(c.updated_at),
            created_at: format_timestamp(c.created_at),
            message_count: c.message_count,
        }
    }
}

#[derive(Serialize)]
struct ListResponse {
    conversations: Vec<ConversationSummary>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
struct MessageView {
    id: String,
    role: &'static str,
    content: String,
    timestamp: String,
    /// `complete`, `pending`, `failed` or `cancelled`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Only on a reply stored cut to `MAX_REPLY_CHARS`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        Self {
            id: m.id.to_string(),
            role: m.role.as_str(),
            status: m.status.as_str(),
            error: match m.status {
                MessageStatus::Failed { error } => Some(error),
                _ => None,
            },
            content: m.content,
            timestamp: format_timestamp(m.created_at),
            truncated: m.truncated,
        }
    }
}

#[derive(Serialize)]
struct ConversationResponse {
    id: String,
    title: String,
    messages: Vec<MessageView>,
    next_cursor: Option<String>,
}

/// Unknown fields are refused, as on the send.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameBody {
    title: String,
}

/// The caller's conversations, newest first.
pub async fn list_conversations<M, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("list-conversations", app, req, |req, _meta| async move {
        let user = authenticate(app, &req)?;
        let page = page_request(&req, CONVERSATIONS_PAGE_DEFAULT, CONVERSATIONS_PAGE_MAX)?;
        let Page { items, next_cursor } = app.chat.list_conversations(&user, &page).await?;
        Ok(ok_json(&ListResponse {
            conversations: items.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    })
    .await
}

/// One of the caller's conversations with a page of its messages.
pub async fn get_conversation<M: ChatModel, S: Store>(
    app: &App<M, S>,
    req: Request,
) -> Response<Body> {
    handle("get-conversation", app, req, |req, meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        let page = page_request(&req, MESSAGES_PAGE_DEFAULT, MESSAGES_PAGE_MAX)?;
        let (conversation, messages) = app
            .chat
            .get_conversation(&user, id, &page, meta.deadline)
            .await?;
        Ok(ok_json(&ConversationResponse {
            id: conversation.id.to_string(),
            title: conversation.title.as_str().to_owned(),
            messages: messages.items.into_iter().map(Into::into).collect(),
            next_cursor: messages.next_cursor,
        }))
    })
    .await
}

/// A new title for one of the caller's conversations.
pub async fn rename_conversation<M, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("rename-conversation", app, req, |req, _meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        let body: RenameBody = parse_json(&req, MAX_BODY_BYTES)?;
        let title = Title::parse(&body.title)
            .map_err(|e| ApiError::unprocessable("invalid_title", e.to_string()))?;
        let conversation = app.chat.rename_conversation(&user, id, &title).await?;
        Ok(ok_json(&ConversationSummary::from(conversation)))
    })
    .await
}

/// Deletes one of the caller's conversations: 204.
pub async fn delete_conversation<M: ChatModel, S: Store>(
    app: &App<M, S>,
    req: Request,
) -> Response<Body> {
    handle("delete-conversation", app, req, |req, meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        app.chat
            .delete_conversation(&user, id, meta.deadline)
            .await?;
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        Ok(resp)
    })
    .await
}

/// Stops the reply being written in one of the caller's conversations:
/// 200 with it, stored cancelled; 409 `no_reply_in_progress` when there is none.
pub async fn stop_reply<M: ChatModel, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("stop-reply", app, req, |req, meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        let stopped = app.chat.stop(&user, id, meta.deadline).await?;
        Ok(ok_json(&MessageView::from(stopped)))
    })
    .await
}
