//! `POST /api/chat/send`: 200 with the reply, or 202 while it is pending.

use crate::store::Store;
use lambda_http::{http::StatusCode, Body, Request, Response};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{
    extract::{authenticate, message_id_field, parse_json, present, MAX_BODY_BYTES},
    handle, idempotency, json_response, ok_json, ApiError,
};
use crate::{
    app::App,
    chat::{ChatModel, SendKind, SendOutcome, SendRequest, SendTimes},
    domain::{
        format_timestamp, ConversationId, DomainError, MessageContent, MessageStatus,
        SettingsPatch, Usage,
    },
};

/// A field this does not name is refused (400 `invalid_request` naming
/// it): a typo such as `conversationId` would otherwise start a new
/// conversation and a new GPU job.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SendBody {
    /// The new message; with `edit_of`, the edited one; none with `regenerate`.
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
    /// An assistant message of the conversation to answer again.
    #[serde(default, deserialize_with = "present")]
    regenerate: Option<serde_json::Value>,
    /// A user message of the conversation to replace by a new version.
    #[serde(default, deserialize_with = "present")]
    edit_of: Option<serde_json::Value>,
    /// Read by [`SettingsPatch::parse`], which names a field it does not know.
    #[serde(default)]
    settings: Option<serde_json::Value>,
}

/// 200: the reply is complete (and a stream's `message.completed`).
#[derive(Serialize)]
pub(super) struct SendResponse {
    conversation_id: String,
    message: String,
    timestamp: String,
    message_id: String,
    user_message_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageView>,
    /// The catalogue's model that wrote the reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// Only when the reply was stored cut to `MAX_REPLY_CHARS`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// A reply's token counts, under the names this API has always used and
/// the OpenAI API's (`prompt_tokens`, `completion_tokens`, `total_tokens`).
#[derive(Serialize)]
pub(super) struct UsageView {
    input_tokens: u64,
    output_tokens: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<Usage> for UsageView {
    fn from(u: Usage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total(),
        }
    }
}

/// 202: the reply is still being generated; the webhook or a later read
/// completes it.
#[derive(Serialize)]
struct PendingResponse {
    conversation_id: String,
    message_id: String,
    user_message_id: String,
    /// Always `pending`.
    status: &'static str,
    timestamp: String,
}

/// Sends the user's message and answers with the model's reply.
pub async fn send_message<M: ChatModel, S: Store>(app: &App<M, S>, req: Request) -> Response<Body> {
    handle("send-message", app, req, |req, meta| async move {
        let user = authenticate(app, &req)?;
        let key = idempotency::key_of(&req)?;
        idempotency::once(app, &user, key, &req, &meta, || async {
            let body = parse_json(&req, MAX_BODY_BYTES)?;
            let request = send_request(body, app.config.max_message_chars)?;
            let times = SendTimes {
                wait_until: (Instant::now() + app.config.send_wait).min(meta.deadline),
                deadline: meta.deadline,
            };
            let outcome = app.chat.send(&user, request, times).await?;
            Ok(respond(outcome))
        })
        .await
    })
    .await
}

/// The body, checked: 400 for a bad conversation id, 422 for a message
/// that is empty or too long.
pub(super) fn send_request(body: SendBody, max_chars: usize) -> Result<SendRequest, ApiError> {
    let conversation_id = body
        .conversation_id
        .map(|raw| {
            ConversationId::parse(&raw)
                .map_err(|e| ApiError::bad_request("invalid_conversation_id", e.to_string()))
        })
        .transpose()?;
    if let Some(id) = conversation_id {
        tracing::Span::current().record("conversation_id", id.to_string());
    }
    let invalid = |message: &str| ApiError::bad_request("invalid_request", message);
    let content = |message: String| {
        MessageContent::parse(message, max_chars).map_err(|e| {
            let code = match e {
                DomainError::MessageTooLong { .. } => "message_too_long",
                _ => "empty_message",
            };
            ApiError::unprocessable(code, e.to_string())
        })
    };
    let regenerate = message_id_field("regenerate", body.regenerate)?;
    let edit_of = message_id_field("edit_of", body.edit_of)?;
    let kind = match (body.message, regenerate, edit_of) {
        (Some(message), None, None) => SendKind::Message(content(message)?),
        (None, Some(reply), None) => SendKind::Regenerate(reply),
        (Some(message), None, Some(of)) => SendKind::Edit(of, content(message)?),
        (None, None, None) => return Err(invalid("missing field `message`")),
        (None, None, Some(_)) => return Err(invalid("`edit_of` needs the new `message`")),
        (_, Some(_), _) => {
            return Err(invalid(
                "`regenerate` comes alone: without `message` or `edit_of`",
            ))
        }
    };
    if conversation_id.is_none() && !matches!(kind, SendKind::Message(_)) {
        return Err(invalid(
            "`regenerate` and `edit_of` need the `conversation_id`",
        ));
    }
    let settings = match &body.settings {
        None => SettingsPatch::default(),
        Some(raw) => SettingsPatch::parse(raw)?,
    };
    Ok(SendRequest {
        conversation_id,
        kind,
        settings,
    })
}

fn respond(outcome: SendOutcome) -> Response<Body> {
    let reply = &outcome.reply;
    if reply.status != MessageStatus::Complete {
        return json_response(
            StatusCode::ACCEPTED,
            &PendingResponse {
                conversation_id: outcome.conversation_id.to_string(),
                message_id: reply.id.to_string(),
                user_message_id: outcome.user_message.id.to_string(),
                status: reply.status.as_str(),
                timestamp: format_timestamp(reply.created_at),
            },
        );
    }
    ok_json(&SendResponse::from(outcome))
}

impl From<SendOutcome> for SendResponse {
    fn from(outcome: SendOutcome) -> Self {
        let SendOutcome {
            conversation_id,
            user_message,
            reply,
        } = outcome;
        SendResponse {
            conversation_id: conversation_id.to_string(),
            timestamp: format_timestamp(reply.created_at),
            message_id: reply.id.to_string(),
            user_message_id: user_message.id.to_string(),
            usage: reply.usage.map(UsageView::from),
            model: reply.model.map(|m| m.to_string()),
            truncated: reply.truncated,
            message: reply.content,
        }
    }
}
