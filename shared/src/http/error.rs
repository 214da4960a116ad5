//! [`ApiError`]: everything a request can fail with, mapped to a status,
//! a stable code and a message in one place. 5xx messages are fixed
//! sentences; the whole cause chain goes to the log, never to the client.

use std::error::Error as StdError;

use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    Body, Response,
};
use serde::Serialize;

use super::json_response;
use crate::{
    auth::AuthError, chat::ChatError, domain::SettingsError, refusal::Refusal, store::StoreError,
};

/// `Retry-After` of a send refused for the user's generations at once: a
/// short reply's time.
const GENERATION_RETRY_SECS: u64 = 5;

/// Everything that can go wrong, mapped to a status in one place.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be read.
    #[error("{message}")]
    BadRequest {
        /// The stable error code.
        code: &'static str,
        /// What was wrong, for the client.
        message: String,
    },
    /// 401: no token, or one that is not valid.
    #[error("authentication failed")]
    Unauthorized(#[source] AuthError),
    /// 413: the body is larger than the route takes.
    #[error("the request body is over {max_bytes} bytes")]
    PayloadTooLarge {
        /// The route's limit.
        max_bytes: usize,
    },
    /// 404, 409 or 429: the request is declined ([`refused`] maps each).
    #[error(transparent)]
    Refused(Refusal),
    /// 409: another conflict, with its code.
    #[error("{message}")]
    Conflict {
        /// The stable error code.
        code: &'static str,
        /// What conflicts, for the client.
        message: String,
    },
    /// 422: well-formed, but the content is refused.
    #[error("{message}")]
    Unprocessable {
        /// The stable error code.
        code: &'static str,
        /// What was wrong, for the client.
        message: String,
    },
    /// 502: the model failed.
    #[error("the model failed")]
    BadGateway(#[source] ChatError),
    /// 504: the model did not answer in time.
    #[error("the model did not answer in time")]
    GatewayTimeout(#[source] ChatError),
    /// 503: the table did not answer in time (or refused for load).
    #[error("the database did not answer")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// 500: anything else.
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

/// The one error body: `{"error": {"code", "message", "request_id"}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

impl ApiError {
    /// A 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 422 with `code`.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            message: message.into(),
        }
    }

    /// A 409 with `code`.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// Whether the user's message was stored (and a job started) before
    /// this error: the model's failures and timeouts, a reply stopped while
    /// the send waited. A retry under the same Idempotency-Key must then
    /// get this answer again, not store the message twice.
    pub fn stored_something(&self) -> bool {
        matches!(
            self,
            Self::BadGateway(_) | Self::GatewayTimeout(_) | Self::Refused(Refusal::ReplyCancelled)
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Refused(refusal) => refused(*refusal).0,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code and message a client sees.
    fn public(&self) -> (&'static str, &str) {
        const TOO_LARGE: &str = "the request body is too large";
        match self {
            Self::BadRequest { code, message }
            | Self::Unprocessable { code, message }
            | Self::Conflict { code, message } => (code, message),
            Self::Unauthorized(AuthError::Missing) => {
                ("unauthorized", "an Authorization: Bearer token is required")
            }
            Self::Unauthorized(AuthError::Expired) => ("unauthorized", "the token has expired"),
            Self::Unauthorized(AuthError::ExpiredWebhookToken) => {
                ("unauthorized", "the webhook URL has expired")
            }
            Self::Unauthorized(_) => ("unauthorized", "the token is not valid"),
            Self::Refused(refusal) => {
                let (_, code, message) = refused(*refusal);
                (code, message)
            }
            Self::PayloadTooLarge { .. } => ("payload_too_large", TOO_LARGE),
            Self::BadGateway(_) => (
                "model_error",
                "the AI model failed to answer; your message was saved, please try again",
            ),
            Self::GatewayTimeout(_) => (
                "model_timeout",
                "the AI model did not answer in time; your message was saved, please try again",
            ),
            Self::Unavailable(_) => (
                "unavailable",
                "the service's storage did not answer in time; please try again",
            ),
            Self::Internal(_) => ("internal_error", "an internal error occurred"),
        }
    }

    /// Logs the error with its whole cause chain (which the client never
    /// sees): a 5xx as an error, anything else as a refusal. The request's
    /// handler calls it once, where it also logs the status.
    pub fn log(&self) {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %error_chain(self), "request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %error_chain(self), "request refused");
        }
    }

    /// The one error body, `{"error": {"code", "message", "request_id"}}`.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        let (code, message) = self.public();
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                request_id,
            },
        };
        serde_json::to_value(&body).expect("strings serialize")
    }

    /// The response.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        let mut resp = json_response(status, &self.body(request_id));
        let retry_after = match &self {
            Self::Refused(Refusal::QuotaExceeded) => {
                // Until the next UTC midnight, when the quota resets.
                let now = chrono::Utc::now();
                let left = (crate::chat::next_midnight(now) - now).num_seconds();
                Some(left.max(1) as u64)
            }
            Self::Refused(Refusal::TooManyGenerations) => Some(GENERATION_RETRY_SECS),
            Self::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::Unauthorized(e) = &self {
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
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Refused(refusal) => Self::Refused(refusal),
            ChatError::Settings(e) => e.into(),
            ChatError::Store(StoreError::InvalidCursor(_)) => {
                Self::bad_request("invalid_cursor", "the cursor is not valid for this list")
            }
            ChatError::Store(e @ StoreError::Unavailable { .. }) => Self::Unavailable(Box::new(e)),
            ChatError::Store(other) => Self::Internal(Box::new(other)),
            ChatError::Model(ref m) if m.is_timeout() => Self::GatewayTimeout(e),
            ChatError::Model(_) => Self::BadGateway(e),
        }
    }
}

/// Settings refused by their own rules or the catalogue's: 422, nothing stored.
impl From<SettingsError> for ApiError {
    fn from(e: SettingsError) -> Self {
        let code = match e {
            SettingsError::UnknownModel(_) => "unknown_model",
            SettingsError::Invalid { .. } => "invalid_settings",
        };
        Self::unprocessable(code, e.to_string())
    }
}

/// The one mapping of a declined request: its status, code and message.
fn refused(refusal: Refusal) -> (StatusCode, &'static str, &'static str) {
    match refusal {
        Refusal::NotFound => (StatusCode::NOT_FOUND, "not_found", "conversation not found"),
        Refusal::ReplyPending => (
            StatusCode::CONFLICT,
            "reply_pending",
            "the previous reply in this conversation is still being generated; send again once it is there",
        ),
        Refusal::NoReplyInProgress => (
            StatusCode::CONFLICT,
            "no_reply_in_progress",
            "no reply is being written in this conversation",
        ),
        Refusal::ReplyCancelled => (
            StatusCode::CONFLICT,
            "reply_cancelled",
            "the reply was stopped before it was written; your message was saved",
        ),
        Refusal::QuotaExceeded => (
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            "your daily quota is used up; it resets at midnight UTC",
        ),
        Refusal::InvalidTarget => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_target",
            "regenerate names an assistant message and edit_of a user message, on the conversation's active path",
        ),
        Refusal::NotRateable => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_target",
            "feedback is given on a reply, once it is no longer being written",
        ),
        Refusal::ShareNotFound => (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such share link",
        ),
        Refusal::TooLongToShare => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_long_to_share",
            "the conversation is too long for one share link (about 350 KB of text)",
        ),
        Refusal::MessageNotFound => (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such message in this conversation",
        ),
        Refusal::TooFarBack => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_far_back",
            "this would move more messages on or off the active path than one change can (40); pick a later message",
        ),
        Refusal::TooManyGenerations => (
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_generations",
            "you have as many replies being written as you may at once; send again when one has finished",
        ),
    }
}

/// `a: b: c`: the error and each of its sources, for the log.
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
