//! The HTTP edge: request parsing, the three handlers, and the one place
//! where errors become responses.
//!
//! Every handler returns a response, never an error: a bad request is a 4xx
//! with a JSON body, not a failed Lambda invocation (which API Gateway would
//! turn into a bare 502).

use std::{
    error::Error as StdError,
    future::Future,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    service_fn, Body, Request, RequestExt, Response,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use tracing::{field::Empty, Instrument};

use crate::{
    app::App,
    auth::AuthError,
    chat::{self, ChatError, ChatModel, SendRequest, SendTimes, WebhookResult},
    config::Config,
    domain::{
        format_timestamp, Conversation, ConversationId, DomainError, Message, MessageContent,
        MessageStatus, Title, Usage,
    },
    store::{Page, PageRequest, StoreError},
};

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

/// Everything that can go wrong, mapped to a status in one place.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("authentication failed")]
    Unauthorized(#[source] AuthError),
    #[error("conversation not found")]
    NotFound,
    #[error("a reply is still pending in this conversation")]
    ReplyPending,
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("the model failed")]
    BadGateway(#[source] chat::ChatError),
    #[error("the model did not answer in time")]
    GatewayTimeout(#[source] chat::ChatError),
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl ApiError {
    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::ReplyPending => StatusCode::CONFLICT,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code and message a client sees. Nothing internal: 5xx messages
    /// are fixed sentences.
    fn public(&self) -> (&'static str, String) {
        match self {
            Self::BadRequest { code, message } | Self::Unprocessable { code, message } => {
                (code, message.clone())
            }
            Self::Unauthorized(e) => (
                "unauthorized",
                match e {
                    AuthError::Missing => "an Authorization: Bearer token is required",
                    AuthError::Expired => "the token has expired",
                    _ => "the token is not valid",
                }
                .into(),
            ),
            Self::NotFound => ("not_found", "conversation not found".into()),
            Self::ReplyPending => (
                "reply_pending",
                "the previous reply in this conversation is still being generated; send again once it is there".into(),
            ),
            Self::BadGateway(_) => (
                "model_error",
                "the AI model failed to answer; your message was saved, please try again".into(),
            ),
            Self::GatewayTimeout(_) => (
                "model_timeout",
                "the AI model did not answer in time; your message was saved, please try again"
                    .into(),
            ),
            Self::Internal(_) => ("internal_error", "an internal error occurred".into()),
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::NotFound => Self::NotFound,
            ChatError::ReplyPending => Self::ReplyPending,
            ChatError::Store(StoreError::InvalidCursor(_)) => {
                Self::bad_request("invalid_cursor", "the cursor is not valid for this list")
            }
            ChatError::Store(other) => Self::Internal(Box::new(other)),
            ChatError::Model(ref m) if m.is_timeout() => Self::GatewayTimeout(e),
            ChatError::Model(_) => Self::BadGateway(e),
        }
    }
}

/// Per-request facts taken from the event before anything can fail.
struct RequestMeta {
    request_id: String,
    deadline: Instant,
}

impl RequestMeta {
    fn of(req: &Request, config: &Config) -> Self {
        let lambda = req.lambda_context_ref();
        let request_id = lambda
            .map(|c| c.request_id.clone())
            .filter(|id| !id.is_empty())
            .or_else(|| match req.request_context_ref() {
                Some(lambda_http::request::RequestContext::ApiGatewayV2(c)) => c.request_id.clone(),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let budget = lambda
            .map(|c| c.deadline)
            // Lambda sends epoch milliseconds. `cargo lambda watch` 1.9 sends
            // its timeout instead (600000): anything before 2001 is no deadline.
            .filter(|d| *d > 1_000_000_000_000)
            .map(|deadline_ms| {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                Duration::from_millis(deadline_ms.saturating_sub(now_ms))
            })
            .unwrap_or(config.default_request_budget);
        tracing::debug!(
            lambda_deadline_ms = lambda.map(|c| c.deadline),
            budget_ms = budget.as_millis() as u64,
            "request budget"
        );
        Self {
            request_id,
            deadline: Instant::now() + budget.saturating_sub(config.deadline_margin),
        }
    }
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

fn error_response(err: &ApiError, request_id: &str) -> Response<Body> {
    let status = err.status();
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), error = %error_chain(err), "request failed");
    } else {
        tracing::info!(status = status.as_u16(), error = %error_chain(err), "request refused");
    }
    let (code, message) = err.public();
    let mut resp = json_response(
        status,
        &json!({"error": {"code": code, "message": message, "request_id": request_id}}),
    );
    if let ApiError::Unauthorized(e) = err {
        let challenge = match e {
            AuthError::Missing => "Bearer",
            _ => "Bearer error=\"invalid_token\"",
        };
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    resp
}

/// `a: b: c` — the error and each of its sources, for the log.
fn error_chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Runs `inner` inside the request's span and turns its result into a response.
async fn handle<Fut>(
    name: &'static str,
    app: &App,
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
        user_id = Empty,
        conversation_id = Empty
    );
    async move {
        let started = std::time::Instant::now();
        let response = match inner(req, meta).await {
            Ok(response) => response,
            Err(e) => error_response(&e, &request_id),
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

fn authenticate(app: &App, req: &Request) -> Result<crate::domain::UserId, ApiError> {
    let user = app
        .auth
        .authenticate(req.headers())
        .map_err(ApiError::Unauthorized)?;
    tracing::Span::current().record("user_id", user.as_str());
    Ok(user)
}

fn parse_json<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let body: &[u8] = req.body().as_ref();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body is empty",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    // serde would also read a struct from a JSON array; the contract says object.
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))
}

/// `limit` and `cursor` from the query string. A `limit` that is not a
/// whole number from 1 to `max` is refused rather than guessed at.
fn page_request(req: &Request, default: u32, max: u32) -> Result<PageRequest, ApiError> {
    let query = req.query_string_parameters_ref();
    let limit = match query.and_then(|q| q.first("limit")) {
        None => default,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be a whole number from 1 to {max}"),
                )
            })?,
    };
    let cursor = query
        .and_then(|q| q.first("cursor"))
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    Ok(PageRequest { limit, cursor })
}

fn path_conversation_id(req: &Request) -> Result<ConversationId, ApiError> {
    let id = req
        .path_parameters_ref()
        .and_then(|p| p.first("id"))
        .and_then(|raw| ConversationId::parse(raw).ok())
        // Not a UUID cannot name a conversation of the caller's.
        .ok_or(ApiError::NotFound)?;
    tracing::Span::current().record("conversation_id", id.to_string());
    Ok(id)
}

// ---- POST /api/chat/send ----

#[derive(Deserialize)]
struct SendBody {
    message: String,
    #[serde(default)]
    conversation_id: Option<String>,
}

#[derive(Serialize)]
struct SendResponse {
    conversation_id: String,
    message: String,
    timestamp: String,
    message_id: String,
    user_message_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

pub async fn send_message<M: ChatModel>(app: &App, model: &M, req: Request) -> Response<Body> {
    handle("send-message", app, req, |req, meta| async move {
        let user = authenticate(app, &req)?;
        let body: SendBody = parse_json(&req)?;
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
        let content =
            MessageContent::parse(body.message, app.config.max_message_chars).map_err(|e| {
                ApiError::Unprocessable {
                    code: match e {
                        DomainError::MessageTooLong { .. } => "message_too_long",
                        _ => "empty_message",
                    },
                    message: e.to_string(),
                }
            })?;
        let request = SendRequest {
            conversation_id,
            content,
        };
        let times = SendTimes {
            wait_until: (Instant::now() + app.config.send_wait).min(meta.deadline),
            deadline: meta.deadline,
        };
        let outcome = chat::send(
            &app.store,
            model,
            &app.webhooks,
            app.history_limits(),
            app.pending_policy(),
            &user,
            request,
            times,
        )
        .await?;
        let reply = outcome.reply;
        if reply.status != MessageStatus::Complete {
            // Still being generated: the webhook or a later read completes it.
            return Ok(json_response(
                StatusCode::ACCEPTED,
                &json!({
                    "conversation_id": outcome.conversation_id.to_string(),
                    "message_id": reply.id.to_string(),
                    "user_message_id": outcome.user_message.id.to_string(),
                    "status": reply.status.as_str(),
                    "timestamp": format_timestamp(reply.created_at),
                }),
            ));
        }
        Ok(ok_json(&SendResponse {
            conversation_id: outcome.conversation_id.to_string(),
            timestamp: format_timestamp(reply.created_at),
            message_id: reply.id.to_string(),
            user_message_id: outcome.user_message.id.to_string(),
            usage: reply.usage,
            message: reply.content,
        }))
    })
    .await
}

// ---- GET /api/chat/conversations ----

pub const CONVERSATIONS_PAGE_DEFAULT: u32 = 20;
pub const CONVERSATIONS_PAGE_MAX: u32 = 100;

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

pub async fn list_conversations(app: &App, req: Request) -> Response<Body> {
    handle("list-conversations", app, req, |req, _meta| async move {
        let user = authenticate(app, &req)?;
        let page = page_request(&req, CONVERSATIONS_PAGE_DEFAULT, CONVERSATIONS_PAGE_MAX)?;
        let Page { items, next_cursor } =
            chat::list_conversations(&app.store, &user, &page).await?;
        Ok(ok_json(&ListResponse {
            conversations: items.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    })
    .await
}

// ---- GET /api/chat/conversations/{id} ----

pub const MESSAGES_PAGE_DEFAULT: u32 = 50;
pub const MESSAGES_PAGE_MAX: u32 = 200;

#[derive(Serialize)]
struct MessageView {
    id: String,
    role: &'static str,
    content: String,
    timestamp: String,
    /// `complete`, `pending` or `failed`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
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

pub async fn get_conversation<M: ChatModel>(app: &App, model: &M, req: Request) -> Response<Body> {
    handle("get-conversation", app, req, |req, meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        let page = page_request(&req, MESSAGES_PAGE_DEFAULT, MESSAGES_PAGE_MAX)?;
        let (conversation, messages) = chat::get_conversation(
            &app.store,
            model,
            &user,
            id,
            &page,
            app.pending_policy(),
            meta.deadline,
        )
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

// ---- PATCH /api/chat/conversations/{id} ----

#[derive(Deserialize)]
struct RenameBody {
    title: String,
}

pub async fn rename_conversation(app: &App, req: Request) -> Response<Body> {
    handle("rename-conversation", app, req, |req, _meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        let body: RenameBody = parse_json(&req)?;
        let title = Title::parse(&body.title).map_err(|e| ApiError::Unprocessable {
            code: "invalid_title",
            message: e.to_string(),
        })?;
        let conversation = chat::rename_conversation(&app.store, &user, id, &title).await?;
        Ok(ok_json(&ConversationSummary::from(conversation)))
    })
    .await
}

// ---- DELETE /api/chat/conversations/{id} ----

pub async fn delete_conversation(app: &App, req: Request) -> Response<Body> {
    handle("delete-conversation", app, req, |req, meta| async move {
        let user = authenticate(app, &req)?;
        let id = path_conversation_id(&req)?;
        chat::delete_conversation(&app.store, &user, id, meta.deadline).await?;
        let mut resp = Response::new(Body::Empty);
        *resp.status_mut() = StatusCode::NO_CONTENT;
        Ok(resp)
    })
    .await
}

// ---- POST /api/chat/runpod/webhook/{token} ----

/// RunPod's delivery of a finished job. No JWT: RunPod cannot send one; the
/// signed token in the path is the authorization, checked before any read
/// or write.
pub async fn runpod_webhook(app: &App, req: Request) -> Response<Body> {
    handle("runpod-webhook", app, req, |req, _meta| async move {
        let target = req
            .path_parameters_ref()
            .and_then(|p| p.first("token"))
            .and_then(|token| app.webhooks.verify(token))
            .ok_or(ApiError::Unauthorized(AuthError::BadWebhookToken))?;
        let span = tracing::Span::current();
        span.record("user_id", target.0.as_str());
        span.record("conversation_id", target.1.to_string());
        let job: crate::runpod::Job = parse_json(&req)?;
        let result = chat::receive_webhook(&app.store, target, job)
            .await
            .map_err(|e| match e {
                ChatError::Model(m) => ApiError::bad_request("invalid_job", m.to_string()),
                other => other.into(),
            })?;
        Ok(ok_json(
            &json!({ "stored": result == WebhookResult::Stored }),
        ))
    })
    .await
}
