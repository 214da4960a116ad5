//! `Idempotency-Key` on the routes that start a job (as in the IETF httpapi
//! draft and Stripe's API): a client's retry gets the first answer again,
//! stores nothing and starts no job. Without the header nothing changes,
//! not even the cost.

use std::{future::Future, time::Duration};

use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    Body, Request, Response,
};
use sha2::{Digest, Sha256};

use super::{extract::RequestMeta, ApiError};
use crate::{
    app::App,
    domain::UserId,
    store::{KeyedRequest, KeyedStart, Store},
};

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header on an answer that is a replay of the first one.
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a key is remembered.
const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The request's key: 1 to 255 printable ASCII characters, else 400.
pub(super) fn key_of(req: &Request) -> Result<Option<String>, ApiError> {
    let Some(raw) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bytes = raw.as_bytes();
    let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
    if bytes.is_empty() || bytes.len() > 255 || !printable {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Answers `req` by `run`, once per key: a retry with the same key and body
/// gets the first answer again (with `Idempotent-Replayed: true`); the
/// same key with another body is 422, while the first still runs 409.
/// Only answers after which something was stored or started are kept
/// (200, 202, and the errors [`ApiError::stored_something`] names); after
/// any other the key is freed, so a retry runs.
pub(super) async fn once<M, S: Store, Fut>(
    app: &App<M, S>,
    user: &UserId,
    key: Option<String>,
    req: &Request,
    meta: &RequestMeta,
    run: impl FnOnce() -> Fut,
) -> Result<Response<Body>, ApiError>
where
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let Some(key) = key else {
        return run().await;
    };
    let body_hash = format!("{:x}", Sha256::digest(req.body().as_ref()));
    let request = KeyedRequest {
        user,
        key: &key,
        body_hash: &body_hash,
    };
    let lock_until = crate::deadline::hold_lapses(meta.deadline);
    let store = app.chat.store();
    let started = store.start_keyed(request, lock_until, KEY_TTL).await;
    match started.map_err(crate::chat::ChatError::from)? {
        KeyedStart::Run => {}
        KeyedStart::Replay { status, body } => return Ok(replay(status, body)),
        KeyedStart::InUse => return Err(ApiError::conflict("idempotency_key_in_use", IN_USE)),
        KeyedStart::Mismatch => {
            return Err(ApiError::unprocessable(
                "idempotency_key_mismatch",
                MISMATCH,
            ))
        }
    }
    let answered = run().await;
    let kept = match &answered {
        Ok(response) => matches!(response.status().as_u16(), 200 | 202),
        Err(e) => e.stored_something(),
    };
    let response = answered.unwrap_or_else(|e| {
        e.log();
        e.into_response(&meta.request_id)
    });
    let recorded = match std::str::from_utf8(response.body().as_ref()) {
        Ok(body) if kept => {
            store
                .finish_keyed(request, response.status().as_u16(), body)
                .await
        }
        _ => store.release_keyed(request).await,
    };
    if let Err(e) = recorded {
        // The answer stands; a retry may run again (or wait out the lock).
        tracing::error!(error = %e, "could not record the idempotency key's answer");
    }
    Ok(response)
}

const IN_USE: &str =
    "a request with this Idempotency-Key is still running; retry once it has answered";
const MISMATCH: &str = "this Idempotency-Key was used with another request body";

/// The first answer, again.
fn replay(status: u16, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    resp
}
