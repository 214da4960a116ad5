//! `GET /api/chat/conversations`, `GET`, `PATCH`, `DELETE
//! /api/chat/conversations/{id}`, and `PUT`, `DELETE` of a reply's feedback.

use crate::store::Store;
use lambda_http::{http::StatusCode, Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::send::UsageView;
use super::{
    extract::{
        authenticate, message_id_field, page_request, parse_json, path_conversation_id, path_param,
        present, MAX_BODY_BYTES,
    },
    handle, ok_json, ApiError,
};
use crate::{
    app::App,
    catalogue::Catalogue,
    chat::ChatModel,
    domain::{
        format_timestamp, Conversation, DomainError, Feedback, Message, MessageId, MessageStatus,
        Rating, Settings, SettingsPatch, Title, FEEDBACK_COMMENT_MAX_CHARS,
    },
    refusal::Refusal,
    store::{ConversationChange, Page},
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
    /// The model that answers it: its own, or the catalogue's default.
    model: String,
}

impl ConversationSummary {
    fn of(c: Conversation, catalogue: &Catalogue) -> Self {
        Self {
            model: catalogue.model_for(&c.settings).id.to_string(),
            id: c.id.to_string(),
            title: c.title.as_str().to_owned(),
            last_message: c.last_message,
            updated_at: format_timestamp(c.updated_at),
            created_at: format_timestamp(c.created_at),
            message_count: c.message_count,
        }
    }
}

/// A conversation's settings, `model` always filled in, the others as
/// stored (`null`: the deployment's default).
#[derive(Serialize)]
pub(super) struct SettingsView {
    model: String,
    instructions: Option<String>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u32>,
}

impl SettingsView {
    pub(super) fn of(s: Settings, catalogue: &Catalogue) -> Self {
        Self {
            model: catalogue.model_for(&s).id.to_string(),
            instructions: s.instructions,
            temperature: s.temperature,
            top_p: s.top_p,
            max_tokens: s.max_tokens,
        }
    }
}

#[derive(Serialize)]
struct ListResponse {
    conversations: Vec<ConversationSummary>,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
pub(super) struct MessageView {
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
    /// A reply's model.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// A reply's token counts, when the worker reported them.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageView>,
    /// The message it follows; `null` for the first.
    parent_id: Option<String>,
    /// Every message with the same parent, oldest first, itself included.
    sibling_ids: Vec<String>,
    /// The user's feedback on a reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    feedback: Option<FeedbackView>,
}

#[derive(Serialize)]
struct FeedbackView {
    rating: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    updated_at: String,
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
            model: m.model.map(|id| id.to_string()),
            usage: m.usage.map(UsageView::from),
            parent_id: m.parent.map(|p| p.to_string()),
            sibling_ids: match m.versions.is_empty() {
                true => vec![m.id.to_string()],
                false => m.versions.iter().map(ToString::to_string).collect(),
            },
            feedback: m.feedback.map(|f| FeedbackView {
                rating: f.rating.as_str(),
                comment: f.comment,
                updated_at: format_timestamp(f.updated_at),
            }),
        }
    }
}

#[derive(Serialize)]
struct ConversationResponse {
    id: String,
    title: String,
    settings: SettingsView,
    messages: Vec<MessageView>,
    next_cursor: Option<String>,
}

/// Unknown fields are refused, as on the send; `settings` is read by
/// [`SettingsPatch::parse`], which names a field it does not know.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "present")]
    title: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    settings: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    active_message_id: Option<serde_json::Value>,
}

/// The caller's conversations, newest first.
pub async fn list_conversations<M, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("list-conversations", app, req, |req, _meta| async move {
        let user = authenticate(app, &req)?;
        let page = page_request(&req, CONVERSATIONS_PAGE_DEFAULT, CONVERSATIONS_PAGE_MAX)?;
        let Page { items, next_cursor } = app.chat.list_conversations(&user, &page).await?;
        Ok(ok_json(&ListResponse {
            conversations: items
                .into_iter()
                .map(|c| ConversationSummary::of(c, app.chat.catalogue()))
                .collect(),
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
            settings: SettingsView::of(conversation.settings, app.chat.catalogue()),
            messages: messages.items.into_iter().map(Into::into).collect(),
            next_cursor: messages.next_cursor,
        }))
    })
    .await
}

/// A new title, new settings, or both, for one of the caller's conversations.
pub async fn rename_conversation<M, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("rename-conversation", app, req, |req, _meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        let body: PatchBody = parse_json(&req, MAX_BODY_BYTES)?;
        if body.title.is_none() && body.settings.is_none() && body.active_message_id.is_none() {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give a title, settings, an active_message_id, or more than one",
            ));
        }
        let active = message_id_field("active_message_id", body.active_message_id)?;
        let title = body
            .title
            .map(|t| match t {
                serde_json::Value::String(t) => Title::parse(&t),
                _ => Err(DomainError::InvalidTitle),
            })
            .transpose()
            .map_err(|e| ApiError::unprocessable("invalid_title", e.to_string()))?;
        let settings = match &body.settings {
            None => SettingsPatch::default(),
            Some(raw) => SettingsPatch::parse(raw)?,
        };
        let change = ConversationChange {
            title,
            settings,
            active_message_id: active,
        };
        let conversation = app.chat.update_conversation(&user, id, &change).await?;
        Ok(ok_json(&ConversationSummary::of(
            conversation,
            app.chat.catalogue(),
        )))
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

/// A rating and its comment, as `PUT …/feedback` takes them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    #[serde(default, deserialize_with = "present")]
    rating: Option<serde_json::Value>,
    #[serde(default)]
    comment: Option<serde_json::Value>,
}

impl FeedbackBody {
    /// The feedback, given now; a missing or unknown rating, or a comment
    /// that is not text of at most 2 000 characters, is 422 naming it. A
    /// blank comment is none.
    fn feedback(self) -> Result<Feedback, ApiError> {
        let invalid = |m: &str| ApiError::unprocessable("invalid_feedback", m.to_owned());
        let rating = match &self.rating {
            Some(serde_json::Value::String(r)) => Rating::parse(r),
            _ => None,
        }
        .ok_or_else(|| invalid("`rating` is \"up\" or \"down\""))?;
        let too_long =
            format!("`comment` is text of at most {FEEDBACK_COMMENT_MAX_CHARS} characters");
        let comment = match self.comment {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(c))
                if c.chars().count() <= FEEDBACK_COMMENT_MAX_CHARS =>
            {
                Some(c).filter(|c| !c.trim().is_empty())
            }
            Some(_) => return Err(invalid(&too_long)),
        };
        Ok(Feedback {
            rating,
            comment,
            updated_at: chrono::Utc::now(),
        })
    }
}

/// `PUT` gives or replaces the caller's feedback on a reply (200 with the
/// message); `DELETE` takes it back (204).
pub async fn message_feedback<M, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("message-feedback", app, req, |req, _meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        let message = path_param(&req, "message_id")
            .and_then(|raw| MessageId::parse(raw).ok())
            .ok_or(ApiError::Refused(Refusal::MessageNotFound))?;
        if req.method() == lambda_http::http::Method::DELETE {
            app.chat.rate(&user, id, message, None).await?;
            let mut resp = Response::new(Body::Empty);
            *resp.status_mut() = StatusCode::NO_CONTENT;
            return Ok(resp);
        }
        let body: FeedbackBody = parse_json(&req, MAX_BODY_BYTES)?;
        let rated = app
            .chat
            .rate(&user, id, message, Some(body.feedback()?))
            .await?;
        Ok(ok_json(&MessageView::from(rated)))
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
