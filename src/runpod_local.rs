//! A local stand-in for a RunPod serverless endpoint, speaking the same
//! queue API: `run`, `runsync` (`?wait=` ms), `status`, `stream`, `cancel`,
//! `health`, with jobs moving `IN_QUEUE` -> `IN_PROGRESS` -> `COMPLETED` /
//! `FAILED` / `CANCELLED` / `TIMED_OUT`, results kept for a while, and the
//! Bearer key checked.
//!
//! Answers come from a [`Responder`]: by default the clearly labelled
//! development responder (no model is called), or any OpenAI-compatible
//! chat completions server (llama.cpp, vLLM, Ollama). The knobs in
//! [`Settings`] (queue delay, execution time, failure rate, a scripted status
//! sequence, holding jobs until released) make it a fault injector for tests.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::{sync::watch, time::Instant};

/// Marks every reply of the development responder, so nobody mistakes it
/// for a model's answer.
pub const DEV_REPLY_PREFIX: &str = "[local development responder: no AI model was called]";

#[derive(Debug, Clone)]
pub enum Responder {
    /// Echoes the last user message behind [`DEV_REPLY_PREFIX`].
    Development,
    /// Forwards to `{base_url}/chat/completions` (OpenAI-compatible).
    OpenAi {
        base_url: String,
        model: String,
        api_key: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Required Bearer key; `None` accepts any key (but still requires one).
    pub api_key: Option<String>,
    /// Only this endpoint id is served; `None` serves any.
    pub endpoint_id: Option<String>,
    pub queue_delay: Duration,
    pub execution_time: Duration,
    /// Jobs running longer than this end `TIMED_OUT`.
    pub execution_timeout: Option<Duration>,
    /// Share of jobs that end `FAILED` (0.0 to 1.0).
    pub failure_rate: f64,
    /// When set, each `status` call of a job answers the next status of
    /// this list (the last one repeats) instead of following the clock.
    pub status_sequence: Option<Vec<String>>,
    /// Jobs stay `IN_PROGRESS` until `POST /_control/release/{job_id}`.
    pub hold: bool,
    /// How long a final job's result stays readable.
    pub result_ttl: Duration,
    /// Pause between webhook delivery attempts (RunPod: 10 s).
    pub webhook_retry_delay: Duration,
    pub responder: Responder,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            api_key: None,
            endpoint_id: None,
            queue_delay: Duration::ZERO,
            execution_time: Duration::from_millis(50),
            execution_timeout: None,
            failure_rate: 0.0,
            status_sequence: None,
            hold: false,
            result_ttl: Duration::from_secs(30 * 60),
            webhook_retry_delay: Duration::from_secs(10),
            responder: Responder::Development,
        }
    }
}

impl Settings {
    /// From `RUNPOD_LOCAL_*` variables (see the README's table).
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let ms = |name: &str, default: u64| -> Result<Duration, String> {
            var(name)
                .map(|v| v.parse::<u64>().map_err(|e| format!("{name}: {e}")))
                .transpose()
                .map(|v| Duration::from_millis(v.unwrap_or(default)))
        };
        let responder = match var("RUNPOD_LOCAL_OPENAI_URL") {
            Some(base_url) => Responder::OpenAi {
                base_url: base_url.trim_end_matches('/').to_owned(),
                model: var("RUNPOD_LOCAL_OPENAI_MODEL").unwrap_or_else(|| "default".into()),
                api_key: var("RUNPOD_LOCAL_OPENAI_KEY"),
            },
            None => Responder::Development,
        };
        Ok(Self {
            api_key: var("RUNPOD_API_KEY"),
            endpoint_id: var("RUNPOD_ENDPOINT_ID"),
            queue_delay: ms("RUNPOD_LOCAL_QUEUE_MS", 0)?,
            execution_time: ms("RUNPOD_LOCAL_EXEC_MS", 300)?,
            execution_timeout: var("RUNPOD_LOCAL_EXECUTION_TIMEOUT_MS")
                .map(|v| {
                    v.parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|e| e.to_string())
                })
                .transpose()?,
            failure_rate: var("RUNPOD_LOCAL_FAILURE_RATE")
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|e| format!("RUNPOD_LOCAL_FAILURE_RATE: {e}"))
                })
                .transpose()?
                .unwrap_or(0.0),
            status_sequence: var("RUNPOD_LOCAL_STATUS_SEQUENCE")
                .map(|s| s.split(',').map(|p| p.trim().to_owned()).collect()),
            hold: var("RUNPOD_LOCAL_HOLD").is_some_and(|v| v == "1" || v == "true"),
            result_ttl: Duration::from_secs(
                var("RUNPOD_LOCAL_RESULT_TTL_SECS")
                    .map(|v| v.parse::<u64>().map_err(|e| e.to_string()))
                    .transpose()?
                    .unwrap_or(30 * 60),
            ),
            webhook_retry_delay: Duration::from_secs(10),
            responder,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    InQueue,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::InQueue => "IN_QUEUE",
            Status::InProgress => "IN_PROGRESS",
            Status::Completed => "COMPLETED",
            Status::Failed => "FAILED",
            Status::Cancelled => "CANCELLED",
            Status::TimedOut => "TIMED_OUT",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "IN_QUEUE" => Status::InQueue,
            "IN_PROGRESS" => Status::InProgress,
            "COMPLETED" => Status::Completed,
            "FAILED" => Status::Failed,
            "CANCELLED" => Status::Cancelled,
            "TIMED_OUT" => Status::TimedOut,
            _ => return None,
        })
    }

    fn is_final(self) -> bool {
        !matches!(self, Status::InQueue | Status::InProgress)
    }
}

struct Job {
    status: Status,
    output: Option<Value>,
    error: Option<String>,
    submitted: Instant,
    started: Option<Instant>,
    finished: Option<Instant>,
    /// Position in the scripted status sequence.
    sequence_pos: usize,
    /// Where the finished job is posted, as RunPod's `webhook` field asks.
    webhook: Option<String>,
    changes: watch::Sender<Status>,
    release: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    status_calls: AtomicU64,
    cancels: AtomicU64,
}

struct Inner {
    settings: Settings,
    jobs: Mutex<HashMap<String, Job>>,
    counters: Counters,
    http: reqwest::Client,
}

#[derive(Clone)]
pub struct LocalRunPod(Arc<Inner>);

impl LocalRunPod {
    pub fn new(settings: Settings) -> Self {
        Self(Arc::new(Inner {
            settings,
            jobs: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("HTTP client"),
        }))
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{endpoint}/run", post(run))
            .route("/{endpoint}/runsync", post(run_sync))
            .route("/{endpoint}/status/{job}", get(status).post(status))
            .route("/{endpoint}/stream/{job}", get(stream).post(stream))
            .route("/{endpoint}/cancel/{job}", post(cancel))
            .route("/{endpoint}/health", get(health))
            .route("/_control/release/{job}", post(release))
            .route("/_control/stats", get(stats))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Binds 127.0.0.1 on a free port and serves in the background; returns the base URL.
    pub async fn spawn(self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(self.serve(listener));
        format!("http://{addr}")
    }

    /// Lets held jobs finish (all of them with `None`).
    pub fn release(&self, job: Option<&str>) {
        let jobs = self.0.jobs.lock().unwrap();
        for (id, j) in jobs.iter() {
            if job.is_none_or(|wanted| wanted == id) {
                j.release.notify_one();
            }
        }
    }

    pub fn submitted(&self) -> u64 {
        self.0.counters.submitted.load(Ordering::Relaxed)
    }

    pub fn status_calls(&self) -> u64 {
        self.0.counters.status_calls.load(Ordering::Relaxed)
    }

    pub fn cancels(&self) -> u64 {
        self.0.counters.cancels.load(Ordering::Relaxed)
    }

    /// Forgets a job as if its result had expired.
    pub fn expire(&self, job: &str) {
        self.0.jobs.lock().unwrap().remove(job);
    }

    fn purge_expired(&self) {
        let ttl = self.0.settings.result_ttl;
        self.0
            .jobs
            .lock()
            .unwrap()
            .retain(|_, j| j.finished.is_none_or(|f| f.elapsed() < ttl));
    }

    fn submit(&self, input: Value, webhook: Option<String>) -> String {
        self.0.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let id = format!("local-{}", uuid::Uuid::new_v4());
        let (tx, _) = watch::channel(Status::InQueue);
        let release = Arc::new(tokio::sync::Notify::new());
        self.0.jobs.lock().unwrap().insert(
            id.clone(),
            Job {
                status: Status::InQueue,
                output: None,
                error: None,
                submitted: Instant::now(),
                started: None,
                finished: None,
                sequence_pos: 0,
                webhook,
                changes: tx,
                release: release.clone(),
            },
        );
        tokio::spawn(self.clone().execute(id.clone(), input, release));
        id
    }

    fn set(&self, id: &str, status: Status, output: Option<Value>, error: Option<String>) -> bool {
        let changed = self.set_locked(id, status, output, error);
        if changed && status.is_final() {
            let webhook = self
                .0
                .jobs
                .lock()
                .unwrap()
                .get(id)
                .and_then(|j| j.webhook.clone());
            if let (Some(url), Some(body)) = (webhook, self.view(id, false)) {
                tokio::spawn(self.clone().deliver(url, body));
            }
        }
        changed
    }

    /// Posts the finished job to its webhook; like RunPod, tries up to three
    /// times, `webhook_retry_delay` apart, until it gets a 2xx.
    async fn deliver(self, url: String, body: Value) {
        for attempt in 1..=3 {
            match self.0.http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => eprintln!("webhook attempt {attempt}: HTTP {}", r.status()),
                Err(e) => eprintln!("webhook attempt {attempt}: {e}"),
            }
            tokio::time::sleep(self.0.settings.webhook_retry_delay).await;
        }
    }

    /// Ids of every job it knows, oldest first.
    pub fn job_ids(&self) -> Vec<String> {
        let jobs = self.0.jobs.lock().unwrap();
        let mut ids: Vec<_> = jobs
            .iter()
            .map(|(id, j)| (j.submitted, id.clone()))
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    fn set_locked(
        &self,
        id: &str,
        status: Status,
        output: Option<Value>,
        error: Option<String>,
    ) -> bool {
        let mut jobs = self.0.jobs.lock().unwrap();
        let Some(job) = jobs.get_mut(id) else {
            return false;
        };
        if job.status.is_final() {
            return false; // cancelled meanwhile, or already done
        }
        job.status = status;
        match status {
            Status::InProgress => job.started = Some(Instant::now()),
            s if s.is_final() => {
                job.finished = Some(Instant::now());
                job.output = output;
                job.error = error;
            }
            _ => {}
        }
        job.changes.send_replace(status);
        true
    }

    async fn execute(self, id: String, input: Value, release: Arc<tokio::sync::Notify>) {
        let s = &self.0.settings;
        tokio::time::sleep(s.queue_delay).await;
        if !self.set(&id, Status::InProgress, None, None) {
            return;
        }
        let started = Instant::now();
        let failed = s.failure_rate > 0.0 && rand::random::<f64>() < s.failure_rate;
        let result = if failed {
            Err("injected failure (RUNPOD_LOCAL_FAILURE_RATE)".to_owned())
        } else {
            self.respond(&input).await
        };
        let run_for = s.execution_time.saturating_sub(started.elapsed());
        match s.execution_timeout {
            Some(limit) if s.execution_time > limit => {
                tokio::time::sleep(limit.saturating_sub(started.elapsed())).await;
                self.set(
                    &id,
                    Status::TimedOut,
                    None,
                    Some("execution timeout exceeded".into()),
                );
                return;
            }
            _ => tokio::time::sleep(run_for).await,
        }
        if s.hold {
            release.notified().await;
        }
        match result {
            Ok(output) => self.set(&id, Status::Completed, Some(output), None),
            Err(e) => self.set(&id, Status::Failed, None, Some(e)),
        };
    }

    async fn respond(&self, input: &Value) -> Result<Value, String> {
        match &self.0.settings.responder {
            Responder::Development => {
                let last_user = input["messages"]
                    .as_array()
                    .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                    .and_then(|m| m["content"].as_str())
                    .or_else(|| input["prompt"].as_str())
                    .ok_or("input has neither messages nor prompt")?;
                let echoed: String = last_user.chars().take(200).collect();
                let text = format!("{DEV_REPLY_PREFIX} You said: {echoed}");
                let words = text.split_whitespace().count() as u64;
                // The official vLLM worker's output shape.
                Ok(json!([{
                    "choices": [{"tokens": [text]}],
                    "usage": {"input": last_user.split_whitespace().count(), "output": words}
                }]))
            }
            Responder::OpenAi {
                base_url,
                model,
                api_key,
            } => {
                let messages = match (&input["messages"], input["prompt"].as_str()) {
                    (Value::Array(m), _) => Value::Array(m.clone()),
                    (_, Some(p)) => json!([{"role": "user", "content": p}]),
                    _ => return Err("input has neither messages nor prompt".into()),
                };
                let mut body = json!({"model": model, "messages": messages});
                if let Some(max) = input.pointer("/sampling_params/max_tokens") {
                    body["max_tokens"] = max.clone();
                }
                let mut req = self
                    .0
                    .http
                    .post(format!("{base_url}/chat/completions"))
                    .json(&body);
                if let Some(key) = api_key {
                    req = req.bearer_auth(key);
                }
                let resp = req.send().await.map_err(|e| format!("model server: {e}"))?;
                let status = resp.status();
                let value: Value = resp
                    .json()
                    .await
                    .map_err(|e| format!("model server answer: {e}"))?;
                if !status.is_success() {
                    return Err(format!("model server answered {status}"));
                }
                Ok(value)
            }
        }
    }

    /// The job as the API shows it; with a status sequence, the next step of it.
    fn view(&self, id: &str, advance: bool) -> Option<Value> {
        let mut jobs = self.0.jobs.lock().unwrap();
        let job = jobs.get_mut(id)?;
        let mut status = job.status;
        if let Some(seq) = &self.0.settings.status_sequence {
            let pos = job.sequence_pos.min(seq.len().saturating_sub(1));
            let step = seq.get(pos).and_then(|s| Status::parse(s));
            match step {
                _ if job.status == Status::Cancelled => {}
                // A scripted COMPLETED waits for the responder's output.
                Some(Status::Completed) if job.output.is_none() => status = Status::InProgress,
                Some(step) => {
                    status = step;
                    if advance {
                        job.sequence_pos += 1;
                    }
                }
                None => {}
            }
        }
        let mut v = json!({"id": id, "status": status.as_str()});
        if let Some(started) = job.started {
            v["delayTime"] = json!(started.duration_since(job.submitted).as_millis() as u64);
            if let Some(finished) = job.finished {
                v["executionTime"] = json!(finished.duration_since(started).as_millis() as u64);
            }
        }
        match status {
            Status::Completed => v["output"] = job.output.clone().unwrap_or(Value::Null),
            Status::Failed | Status::TimedOut => {
                v["error"] = json!(job.error.clone().unwrap_or_else(|| "job failed".into()))
            }
            _ => {}
        }
        Some(v)
    }

    fn check(&self, headers: &HeaderMap, endpoint: &str) -> Result<(), Refusal> {
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
        if s.endpoint_id.as_deref().is_some_and(|e| e != endpoint) {
            return Err(refuse(StatusCode::NOT_FOUND, "endpoint not found"));
        }
        Ok(())
    }
}

/// A refused request: status and RunPod's `{"error": ...}` body.
type Refusal = (StatusCode, Json<Value>);

fn refuse(status: StatusCode, message: &str) -> Refusal {
    (status, Json(json!({ "error": message })))
}

fn not_found() -> Refusal {
    refuse(StatusCode::NOT_FOUND, "request does not exist")
}

/// The job's `input` and optional `webhook` from a `run`/`runsync` body.
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

type Answer = Result<Json<Value>, Refusal>;

async fn run(
    State(rp): State<LocalRunPod>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    rp.check(&headers, &endpoint)?;
    rp.purge_expired();
    let (input, webhook) = job_input(&body)?;
    let id = rp.submit(input, webhook);
    Ok(Json(json!({"id": id, "status": "IN_QUEUE"})))
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

async fn run_sync(
    State(rp): State<LocalRunPod>,
    Path(endpoint): Path<String>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    rp.check(&headers, &endpoint)?;
    rp.purge_expired();
    let (input, webhook) = job_input(&body)?;
    let id = rp.submit(input, webhook);
    let wait = Duration::from_millis(q.wait.unwrap_or(90_000).clamp(1_000, 300_000));
    if rp.0.settings.status_sequence.is_none() {
        let changes =
            rp.0.jobs
                .lock()
                .unwrap()
                .get(&id)
                .map(|j| j.changes.subscribe());
        if let Some(mut rx) = changes {
            let _ = tokio::time::timeout(wait, rx.wait_for(|s| s.is_final())).await;
        }
    }
    rp.view(&id, true).map(Json).ok_or_else(not_found)
}

async fn status(
    State(rp): State<LocalRunPod>,
    Path((endpoint, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    rp.check(&headers, &endpoint)?;
    rp.purge_expired();
    rp.0.counters.status_calls.fetch_add(1, Ordering::Relaxed);
    rp.view(&job, true).map(Json).ok_or_else(not_found)
}

async fn stream(
    State(rp): State<LocalRunPod>,
    Path((endpoint, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    rp.check(&headers, &endpoint)?;
    rp.purge_expired();
    let v = rp.view(&job, false).ok_or_else(not_found)?;
    let chunks = match v.get("output") {
        Some(Value::Array(parts)) => parts.iter().map(|p| json!({"output": p})).collect(),
        Some(other) => vec![json!({"output": other})],
        None => vec![],
    };
    Ok(Json(
        json!({"id": job, "status": v["status"], "stream": chunks}),
    ))
}

async fn cancel(
    State(rp): State<LocalRunPod>,
    Path((endpoint, job)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    rp.check(&headers, &endpoint)?;
    rp.0.counters.cancels.fetch_add(1, Ordering::Relaxed);
    rp.set(&job, Status::Cancelled, None, None);
    let v = rp.view(&job, false).ok_or_else(not_found)?;
    Ok(Json(json!({"id": job, "status": v["status"]})))
}

async fn health(
    State(rp): State<LocalRunPod>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
) -> Answer {
    rp.check(&headers, &endpoint)?;
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

async fn release(State(rp): State<LocalRunPod>, Path(job): Path<String>) -> Response {
    rp.release(Some(&job));
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(rp): State<LocalRunPod>) -> Response {
    let c = &rp.0.counters;
    Json(json!({
        "submitted": c.submitted.load(Ordering::Relaxed),
        "status_calls": c.status_calls.load(Ordering::Relaxed),
        "cancels": c.cancels.load(Ordering::Relaxed),
    }))
    .into_response()
}
