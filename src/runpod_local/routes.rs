//! The HTTP face: RunPod's queue routes under `/{endpoint_id}/`, each
//! checking the Bearer key, and the test-only `/_control/` routes.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header::RETRY_AFTER, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};

use super::{jobs::Status, LocalRunPod};

/// The endpoint's routes, served with `rp` as their state.
pub(super) fn router(rp: LocalRunPod) -> Router {
    Router::new()
        .route("/{endpoint}/run", post(run))
        .route("/{endpoint}/runsync", post(runsync))
        .route("/{endpoint}/status/{job}", get(status).post(status))
        .route("/{endpoint}/stream/{job}", get(stream).post(stream))
        .route("/{endpoint}/cancel/{job}", post(cancel))
        .route("/{endpoint}/health", get(health))
        .route("/_control/release/{job}", post(release))
        .route("/_control/submissions", get(submissions))
        .with_state(rp)
}

/// A refused request: status and RunPod's `{"error": ...}` body.
type Refusal = (StatusCode, Json<Value>);

type Answer = Result<Json<Value>, Refusal>;

fn refuse(status: StatusCode, message: &str) -> Refusal {
    (status, Json(json!({ "error": message })))
}

fn not_found() -> Refusal {
    refuse(StatusCode::NOT_FOUND, "request does not exist")
}

impl LocalRunPod {
    /// Admits a request with the right Bearer key for a served endpoint id.
    fn admit(&self, headers: &HeaderMap, endpoint: &str) -> Result<(), Refusal> {
        let s = &self.0.settings;
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let authorized = match (&s.api_key, presented) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(want), Some(got)) => want == got,
        };
        if !authorized {
            return Err(refuse(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
        if s.endpoint_ids
            .as_ref()
            .is_some_and(|ids| !ids.iter().any(|e| e == endpoint))
        {
            return Err(refuse(StatusCode::NOT_FOUND, "endpoint not found"));
        }
        Ok(())
    }

    /// Admits a `status` or `stream` request for `job`, counts it in
    /// `calls` and lets results past their retention go first. A job of
    /// another endpoint is not found.
    fn look(
        &self,
        headers: &HeaderMap,
        endpoint: &str,
        job: &str,
        calls: &AtomicU64,
    ) -> Result<(), Refusal> {
        self.admit(headers, endpoint)?;
        self.purge_expired();
        calls.fetch_add(1, Ordering::Relaxed);
        if self.at(endpoint, job) {
            Ok(())
        } else {
            Err(not_found())
        }
    }
}

/// The job's `input` and optional `webhook` from a `run` or `runsync` body.
fn job_input(body: &[u8]) -> Result<(Value, Option<String>), Refusal> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")))?;
    let webhook = value
        .get("webhook")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match value.get("input") {
        Some(input @ Value::Object(_)) => Ok((input.clone(), webhook)),
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            "body must have an input object",
        )),
    }
}

async fn run(
    State(rp): State<LocalRunPod>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Response> {
    let id = rp
        .queue(&headers, &endpoint, &body, false)
        .map_err(|r| *r)?;
    Ok(Json(json!({"id": id, "status": "IN_QUEUE"})))
}

/// `runsync`'s `wait`, as RunPod reads it (docs, "Operation reference",
/// /runsync: default 90 s, 1 000–300 000 ms; outside, RunPod answers 400
/// "wait is invalid; must be between 1000 and 300000").
#[derive(serde::Deserialize)]
struct SyncQuery {
    wait: Option<String>,
}

const RUNSYNC_DEFAULT_WAIT_MS: u64 = 90_000;

async fn runsync(
    State(rp): State<LocalRunPod>,
    Path(endpoint): Path<String>,
    Query(query): Query<SyncQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, Response> {
    let wait_ms = match query.wait.as_deref() {
        None => RUNSYNC_DEFAULT_WAIT_MS,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|ms| (1_000..=300_000).contains(ms))
            .ok_or_else(|| {
                let message = "wait is invalid; must be between 1000 and 300000";
                refuse(StatusCode::BAD_REQUEST, message).into_response()
            })?,
    };
    let id = rp.queue(&headers, &endpoint, &body, true).map_err(|r| *r)?;
    let job = rp.hold_on(&id, Duration::from_millis(wait_ms)).await;
    job.map(Json).ok_or_else(|| not_found().into_response())
}

impl LocalRunPod {
    /// Admits and queues a `run` or `runsync` job: a 429 while the throttle
    /// lasts, a 400 for a body without an `input` object.
    fn queue(
        &self,
        headers: &HeaderMap,
        endpoint: &str,
        body: &[u8],
        sync: bool,
    ) -> Result<String, Box<Response>> {
        self.admit(headers, endpoint)
            .map_err(|r| Box::new(r.into_response()))?;
        if self.0.started.elapsed() < self.0.settings.run_throttle {
            self.0
                .counters
                .throttled_runs
                .fetch_add(1, Ordering::Relaxed);
            let refusal = refuse(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
            return Err(Box::new(([(RETRY_AFTER, "5")], refusal).into_response()));
        }
        self.purge_expired();
        let (input, webhook) = job_input(body).map_err(|r| Box::new(r.into_response()))?;
        Ok(self.submit(endpoint, input, webhook, sync))
    }
}

async fn status(
    State(rp): State<LocalRunPod>,
    Path((endpoint, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    rp.look(&headers, &endpoint, &job, &rp.0.counters.status_calls)?;
    rp.view(&job, true).map(Json).ok_or_else(not_found)
}

async fn stream(
    State(rp): State<LocalRunPod>,
    Path((endpoint, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    rp.look(&headers, &endpoint, &job, &rp.0.counters.stream_calls)?;
    rp.stream_view(&job).map(Json).ok_or_else(not_found)
}

async fn cancel(
    State(rp): State<LocalRunPod>,
    Path((endpoint, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    rp.admit(&headers, &endpoint)?;
    rp.0.counters.cancels.fetch_add(1, Ordering::Relaxed);
    if !rp.at(&endpoint, &job) {
        return Err(not_found());
    }
    rp.set(&job, Status::Cancelled, Ok(None));
    let v = rp.view(&job, false).ok_or_else(not_found)?;
    Ok(Json(json!({"id": job, "status": v["status"]})))
}

async fn health(
    State(rp): State<LocalRunPod>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
) -> Answer {
    rp.admit(&headers, &endpoint)?;
    let jobs = rp.0.jobs.lock().unwrap();
    let count = |s: Status| jobs.values().filter(|j| j.status == s).count();
    Ok(Json(json!({
        "jobs": {
            "completed": count(Status::Completed),
            "failed": count(Status::Failed) + count(Status::TimedOut),
            "inProgress": count(Status::InProgress),
            "inQueue": count(Status::InQueue),
            "retried": 0
        },
        "workers": {"idle": 1, "running": count(Status::InProgress)}
    })))
}

/// Every job's endpoint and `input` as submitted, oldest first: what a
/// test outside the process (the chat page's, in a browser) checks reached
/// the model.
async fn submissions(State(rp): State<LocalRunPod>) -> Json<Value> {
    let jobs: Vec<Value> = rp
        .submissions()
        .into_iter()
        .map(|(endpoint, input)| json!({ "endpoint": endpoint, "input": input }))
        .collect();
    Json(json!({ "submissions": jobs }))
}

async fn release(State(rp): State<LocalRunPod>, Path(job): Path<String>) -> StatusCode {
    rp.release(Some(&job));
    StatusCode::NO_CONTENT
}
