//! RunPod serverless client: submit with `runsync`, poll `status` with
//! backoff until the job is final or the deadline comes, `cancel` at the
//! deadline; 429/5xx retried with jittered exponential backoff honouring
//! `Retry-After`; every call bounded by a timeout.

mod input;
mod output;

use std::time::Duration;

use rand::Rng;
use reqwest::{header::RETRY_AFTER, Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

pub use input::build_input;
pub use output::{parse_output, Completion, OutputError};

use crate::{config::RunPodConfig, domain::Message};

pub struct RunPodClient {
    http: reqwest::Client,
    config: RunPodConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum RunPodError {
    #[error("could not reach RunPod")]
    Transport(#[source] reqwest::Error),
    #[error("RunPod answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("RunPod's answer could not be read: {0}")]
    InvalidResponse(String),
    #[error("job {job_id} failed: {error}")]
    JobFailed { job_id: String, error: String },
    #[error("job {job_id} was cancelled")]
    JobCancelled { job_id: String },
    #[error("job {job_id} timed out at RunPod")]
    JobTimedOut { job_id: String },
    #[error("the reply did not come before the deadline (job {job_id:?})")]
    Deadline { job_id: Option<String> },
    #[error("job {job_id} returned unusable output")]
    Output {
        job_id: String,
        #[source]
        source: OutputError,
    },
}

impl RunPodError {
    /// Whether the model ran out of time (504) rather than failed (502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Deadline { .. } | Self::JobTimedOut { .. })
    }
}

/// A job as `run`, `runsync` and `status` describe it.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    #[serde(default)]
    pub id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub output: Option<Value>,
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl Job {
    pub fn state(&self) -> Result<JobState, RunPodError> {
        Ok(match self.status.as_str() {
            "IN_QUEUE" => JobState::Queued,
            "IN_PROGRESS" => JobState::Running,
            "COMPLETED" => JobState::Completed,
            "FAILED" => JobState::Failed,
            "CANCELLED" => JobState::Cancelled,
            "TIMED_OUT" => JobState::TimedOut,
            other => {
                return Err(RunPodError::InvalidResponse(format!(
                    "unknown job status {:?}",
                    truncate(other, 40)
                )))
            }
        })
    }

    fn id(&self) -> Result<&str, RunPodError> {
        self.id
            .as_deref()
            .ok_or_else(|| RunPodError::InvalidResponse("a job without an id".into()))
    }
}

/// What to do when a call fails in a way that may be worth a retry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    /// A retry cannot start a second job: retry on timeouts too.
    Yes,
    /// A retry after a timeout might start the job twice: retry only when
    /// the request surely did not arrive (connect errors) or was refused (429, 5xx).
    No,
}

/// Longest wait RunPod accepts on `runsync`.
const RUNSYNC_MAX_WAIT: Duration = Duration::from_secs(90);
/// Time given to the best-effort cancel after the deadline.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl RunPodClient {
    pub fn new(config: RunPodConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::rustls_config())
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { http, config })
    }

    pub fn config(&self) -> &RunPodConfig {
        &self.config
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/{}/{}",
            self.config.base_url, self.config.endpoint_id, path
        )
    }

    /// Sends the conversation (oldest first, ending with the new user
    /// message) with `runsync` and returns the model's reply, cancelling the
    /// job at the deadline. (The send use case submits with [`Self::submit`]
    /// instead, so that a reply can outlast the request.)
    pub async fn generate(
        &self,
        history: &[Message],
        deadline: Instant,
    ) -> Result<Completion, RunPodError> {
        let input = build_input(&self.config, history);
        let job = self.run_sync(&input, deadline).await?;
        let job = self.wait_until_final(job, deadline).await?;
        finish(job)
    }

    /// `POST run`: queues the job and returns its id at once. With a
    /// `webhook`, RunPod posts the finished job there.
    pub async fn submit(
        &self,
        history: &[Message],
        webhook: Option<&str>,
        deadline: Instant,
    ) -> Result<String, RunPodError> {
        let mut body = json!({ "input": build_input(&self.config, history) });
        if let Some(url) = webhook {
            body["webhook"] = json!(url);
        }
        let url = self.url("run");
        let job = self
            .call(
                || self.http.post(&url).json(&body),
                self.config.request_timeout,
                deadline,
                Idempotent::No,
            )
            .await?;
        Ok(job.id()?.to_owned())
    }

    /// Polls the job until it is final or `until` comes; the job is left
    /// running in the second case.
    pub async fn wait(&self, job_id: &str, until: Instant) -> Result<JobPoll, RunPodError> {
        let mut delay = self.config.poll_initial_delay;
        loop {
            if Instant::now() + delay >= until {
                return Ok(JobPoll::Running);
            }
            sleep(delay).await;
            delay = (delay * 3 / 2).min(self.config.poll_max_delay);
            match self.poll(job_id, until).await {
                Ok(JobPoll::Running) => {}
                Err(RunPodError::Deadline { .. }) => return Ok(JobPoll::Running),
                other => return other,
            }
        }
    }

    /// One `status` call. A job RunPod no longer knows (its result expired)
    /// is `Err(Status { status: 404, .. })`.
    pub async fn poll(&self, job_id: &str, deadline: Instant) -> Result<JobPoll, RunPodError> {
        let job = self.status(job_id, deadline).await?;
        Ok(match job.state()? {
            JobState::Queued | JobState::Running => JobPoll::Running,
            _ => JobPoll::Done(finish(job)),
        })
    }

    /// `POST runsync`: RunPod holds the request until the job is done or
    /// `wait` passes, then answers with the job as it stands.
    async fn run_sync(&self, input: &Value, deadline: Instant) -> Result<Job, RunPodError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let wait = remaining
            .saturating_sub(Duration::from_secs(1))
            .clamp(Duration::from_secs(1), RUNSYNC_MAX_WAIT);
        let url = self.url("runsync");
        let body = json!({ "input": input });
        let wait_ms = wait.as_millis().to_string();
        self.call(
            || {
                self.http
                    .post(&url)
                    .query(&[("wait", wait_ms.as_str())])
                    .json(&body)
            },
            remaining,
            deadline,
            Idempotent::No,
        )
        .await
    }

    async fn status(&self, job_id: &str, deadline: Instant) -> Result<Job, RunPodError> {
        let url = self.url(&format!("status/{job_id}"));
        self.call(
            || self.http.request(Method::GET, &url),
            self.config.request_timeout,
            deadline,
            Idempotent::Yes,
        )
        .await
    }

    /// Best effort: a job nobody waits for any more should not hold a GPU.
    async fn cancel(&self, job_id: &str) {
        let url = self.url(&format!("cancel/{job_id}"));
        let deadline = Instant::now() + CANCEL_TIMEOUT;
        match self
            .call(
                || self.http.post(&url),
                CANCEL_TIMEOUT,
                deadline,
                Idempotent::Yes,
            )
            .await
        {
            Ok(job) => tracing::info!(job_id, status = %job.status, "cancelled RunPod job"),
            Err(e) => tracing::warn!(job_id, error = %e, "could not cancel RunPod job"),
        }
    }

    /// Polls `status` with growing delays until the job is final; at the
    /// deadline cancels it.
    async fn wait_until_final(&self, mut job: Job, deadline: Instant) -> Result<Job, RunPodError> {
        let mut delay = self.config.poll_initial_delay;
        loop {
            if !matches!(job.state()?, JobState::Queued | JobState::Running) {
                return Ok(job);
            }
            let id = job.id()?.to_owned();
            if Instant::now() + delay >= deadline {
                self.cancel(&id).await;
                return Err(RunPodError::Deadline { job_id: Some(id) });
            }
            sleep(delay).await;
            delay = (delay * 3 / 2).min(self.config.poll_max_delay);
            job = match self.status(&id, deadline).await {
                Ok(job) => job,
                Err(e) => {
                    self.cancel(&id).await;
                    return Err(match e {
                        RunPodError::Deadline { .. } => RunPodError::Deadline { job_id: Some(id) },
                        other => other,
                    });
                }
            };
        }
    }

    /// One API call with the retry policy. `timeout` bounds each attempt
    /// and `deadline` bounds them all.
    async fn call(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
        timeout: Duration,
        deadline: Instant,
        idempotent: Idempotent,
    ) -> Result<Job, RunPodError> {
        let mut attempt = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RunPodError::Deadline { job_id: None });
            }
            let sent = request()
                .bearer_auth(self.config.api_key.expose())
                .timeout(timeout.min(remaining))
                .send()
                .await;
            let (error, retry_after) = match sent {
                Ok(resp) if resp.status().is_success() => {
                    let bytes = resp.bytes().await.map_err(RunPodError::Transport)?;
                    return serde_json::from_slice::<Job>(&bytes)
                        .map_err(|e| RunPodError::InvalidResponse(format!("not a job: {e}")));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = parse_retry_after(resp.headers().get(RETRY_AFTER));
                    let body = resp.text().await.unwrap_or_default();
                    let error = RunPodError::Status {
                        status: status.as_u16(),
                        body: truncate(&body, 200).to_owned(),
                    };
                    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
                        return Err(error);
                    }
                    (error, retry_after)
                }
                Err(e) if e.is_timeout() && Instant::now() >= deadline => {
                    return Err(RunPodError::Deadline { job_id: None })
                }
                Err(e) if e.is_connect() || (e.is_timeout() && idempotent == Idempotent::Yes) => {
                    (RunPodError::Transport(e), None)
                }
                Err(e) => return Err(RunPodError::Transport(e)),
            };
            if attempt >= self.config.max_retries {
                return Err(error);
            }
            let delay = retry_after.unwrap_or_else(|| self.backoff(attempt));
            if Instant::now() + delay >= deadline {
                return Err(error);
            }
            tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "retrying RunPod call");
            sleep(delay).await;
            attempt += 1;
        }
    }

    /// Exponential backoff with "equal jitter": half fixed, half random, so
    /// retries from many instances spread out.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .config
            .retry_base_delay
            .saturating_mul(1 << attempt.min(16))
            .min(MAX_BACKOFF);
        let half = full / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// Where a job stands.
#[derive(Debug)]
pub enum JobPoll {
    Running,
    /// Final: the reply, or the error the job ended with.
    Done(Result<Completion, RunPodError>),
}

/// A final job to a reply, or to the error it stands for.
pub fn finish(job: Job) -> Result<Completion, RunPodError> {
    let job_id = job.id.clone().unwrap_or_default();
    match job.state()? {
        JobState::Completed => parse_output(job.output.as_ref())
            .map_err(|source| RunPodError::Output { job_id, source }),
        JobState::Failed => Err(RunPodError::JobFailed {
            job_id,
            error: job
                .error
                .map(|e| match e {
                    Value::String(s) => truncate(&s, 500).to_owned(),
                    other => truncate(&other.to_string(), 500).to_owned(),
                })
                .unwrap_or_else(|| "no error given".into()),
        }),
        JobState::Cancelled => Err(RunPodError::JobCancelled { job_id }),
        JobState::TimedOut => Err(RunPodError::JobTimedOut { job_id }),
        JobState::Queued | JobState::Running => Err(RunPodError::Deadline {
            job_id: Some(job_id),
        }),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare on APIs and ignored).
fn parse_retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let secs: f64 = value?.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(60.0)))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
