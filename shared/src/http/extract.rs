//! What a request carries, read and checked: its id and deadline, the
//! caller, a JSON body, paging parameters, path ids. Each failure is the
//! [`ApiError`] the client should see.

use lambda_http::{request::RequestContext, Request, RequestExt};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::ApiError;
use crate::{
    app::App,
    config::Config,
    deadline,
    domain::{ConversationId, MessageId, UserId},
    store::PageRequest,
};

/// Per-request facts taken from the event before anything can fail.
pub(super) struct RequestMeta {
    pub request_id: String,
    pub deadline: Instant,
}

impl RequestMeta {
    pub fn of(req: &Request, config: &Config) -> Self {
        let lambda = req.lambda_context_ref();
        let request_id = lambda
            .map(|c| c.request_id.clone())
            .filter(|id| !id.is_empty())
            .or_else(|| match req.request_context_ref() {
                Some(RequestContext::ApiGatewayV2(c)) => c.request_id.clone(),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let deadline = deadline::until(
            lambda.map(|c| c.deadline),
            config.deadline_margin,
            config.default_request_budget,
        );
        Self {
            request_id,
            deadline,
        }
    }
}

/// The caller named by the bearer token.
pub(super) fn authenticate<M, S>(app: &App<M, S>, req: &Request) -> Result<UserId, ApiError> {
    let user = app
        .auth
        .authenticate(req.headers())
        .map_err(ApiError::Unauthorized)?;
    tracing::Span::current().record("user", app.auth.log_id(&user));
    Ok(user)
}

/// The most bytes of a client's request body: far above any valid send or
/// rename, and refused before it becomes a JSON tree.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The most bytes of a RunPod webhook delivery: it carries the job's whole
/// output (RunPod answers are read up to 2 MiB by default too).
pub(super) const MAX_WEBHOOK_BYTES: usize = 2 * 1024 * 1024;

/// The body as a JSON object of type `T`; 413 past `max_bytes`.
pub(super) fn parse_json<T: DeserializeOwned>(
    req: &Request,
    max_bytes: usize,
) -> Result<T, ApiError> {
    let body: &[u8] = req.body().as_ref();
    if body.len() > max_bytes {
        return Err(ApiError::PayloadTooLarge { max_bytes });
    }
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
pub(super) fn page_request(req: &Request, default: u32, max: u32) -> Result<PageRequest, ApiError> {
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
    Ok(PageRequest {
        limit,
        cursor: cursor(req),
    })
}

/// `cursor` from the query string; absent or empty for the first page.
pub(super) fn cursor(req: &Request) -> Option<String> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first("cursor"))
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
}

/// A path parameter, if the route has it.
pub(super) fn path_param<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.path_parameters_ref().and_then(|p| p.first(name))
}

/// The `{id}` of the path. Not a UUID cannot name a conversation of the
/// caller's: 404, like any other id that is not theirs.
pub(super) fn path_conversation_id(req: &Request) -> Result<ConversationId, ApiError> {
    let id = path_param(req, "id")
        .and_then(|raw| ConversationId::parse(raw).ok())
        .ok_or(ApiError::Refused(crate::refusal::Refusal::NotFound))?;
    tracing::Span::current().record("conversation_id", id.to_string());
    Ok(id)
}

/// A field that is there, `null` included (serde reads a `null` into an
/// `Option` as absent): a body refuses `null` where the contract has none.
pub(super) fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// A message id a body names in `field` (read with [`present`]): 400
/// `invalid_message_id` for anything but one (`null` included).
pub(super) fn message_id_field(
    field: &str,
    raw: Option<serde_json::Value>,
) -> Result<Option<MessageId>, ApiError> {
    let invalid =
        || ApiError::bad_request("invalid_message_id", format!("`{field}` is a message id"));
    match raw {
        None => Ok(None),
        Some(serde_json::Value::String(raw)) => {
            MessageId::parse(&raw).map(Some).map_err(|_| invalid())
        }
        Some(_) => Err(invalid()),
    }
}
