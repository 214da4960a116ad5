//! RunPod serverless client: submit a job and wait for it in one held call
//! (`runsync?wait=`), or submit it with `run` (with a webhook when replies
//! may outlast the request) and poll `status` with growing delays until the
//! job is final or the wait ends; 429/5xx retried with jittered
//! exponential backoff honouring `Retry-After`; every call bounded by a
//! timeout and the request's deadline. [`model`] makes it the chat's
//! [`crate::chat::ChatModel`].

mod http;
mod input;
mod model;
mod output;

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

use http::{not_a_job, truncate, Idempotent};
pub use input::build_input;
pub use output::{parse_chunk, parse_output, OutputError};

use crate::{
    config::RunPodConfig,
    domain::{Completion, UsageSum},
};

/// Whether `id` is one RunPod gives (endpoint and job ids: letters, digits,
/// `-` and `_`, at most 128), and so safe to put in a URL's path.
pub fn is_runpod_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The shortest and longest `wait` `runsync` takes (RunPod's docs,
/// "Operation reference", /runsync: 1 000–300 000 ms).
const RUNSYNC_MIN_WAIT: Duration = Duration::from_millis(1_000);
const RUNSYNC_MAX_WAIT: Duration = Duration::from_millis(300_000);

/// The client, built once per cold start; its connection pool is reused.
pub struct RunPodClient {
    http: reqwest::Client,
    config: RunPodConfig,
}

/// Everything that can go wrong with RunPod; the chat sees it as a
/// [`crate::chat::ModelError`] with this as its source.
#[derive(Debug, thiserror::Error)]
pub enum RunPodError {
    /// No answer: connection refused or reset, or a timeout.
    #[error("could not reach RunPod")]
    Transport(#[source] reqwest::Error),
    /// An HTTP error status (after the retries, for those retried).
    #[error("RunPod answered HTTP {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the body, for the log.
        body: String,
    },
    /// An answer that is not a job.
    #[error("RunPod's answer could not be read: {0}")]
    InvalidResponse(String),
    /// The job ended `FAILED`.
    #[error("job {job_id} failed: {error}")]
    JobFailed {
        /// The job.
        job_id: String,
        /// The worker's error, shortened.
        error: String,
    },
    /// The job ended `CANCELLED`.
    #[error("job {job_id} was cancelled")]
    JobCancelled {
        /// The job.
        job_id: String,
    },
    /// The job ended `TIMED_OUT` (RunPod's execution timeout).
    #[error("job {job_id} timed out at RunPod")]
    JobTimedOut {
        /// The job.
        job_id: String,
    },
    /// The request's deadline came before RunPod answered.
    #[error("the reply did not come before the deadline (job {job_id:?})")]
    Deadline {
        /// The job, when one was known.
        job_id: Option<String>,
    },
    /// The job completed with output no known worker shape matches.
    #[error("job {job_id} returned unusable output")]
    Output {
        /// The job.
        job_id: String,
        /// What was wrong with the output.
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

/// A job as `run` and `status` (and the webhook delivery) describe it.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    /// The job id (`run` and `status` always give one).
    #[serde(default)]
    pub id: Option<String>,
    /// `IN_QUEUE`, `IN_PROGRESS`, `COMPLETED`, `FAILED`, `CANCELLED` or `TIMED_OUT`.
    pub status: String,
    /// The worker's output, once completed.
    #[serde(default)]
    pub output: Option<Value>,
    /// The worker's error, once failed.
    #[serde(default)]
    pub error: Option<Value>,
    /// `GET stream` only: the chunks produced since the last call, each
    /// `{"output": <chunk>}`.
    #[serde(default)]
    pub stream: Option<Vec<Value>>,
}

/// What `GET stream` returned: the pieces produced since the last call and,
/// once the job is over, how it ended.
#[derive(Debug)]
pub struct StreamPoll {
    /// Each chunk's text (possibly empty), in order.
    pub pieces: Vec<String>,
    /// The token counts these chunks report, counted once ([`UsageSum`]).
    pub usage: Option<crate::domain::Usage>,
    /// `None` while queued or running.
    pub end: Option<StreamEnd>,
}

/// How a streamed job ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// Every piece has been delivered.
    Completed,
    /// Cancelled (by a stop, or at RunPod).
    Cancelled,
    /// Failed or timed out at RunPod.
    Failed(RunPodError),
}

/// [`Job::status`], read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// `IN_QUEUE`: waiting for a worker.
    Queued,
    /// `IN_PROGRESS`.
    Running,
    /// `COMPLETED`: the output holds the reply.
    Completed,
    /// `FAILED`.
    Failed,
    /// `CANCELLED`.
    Cancelled,
    /// `TIMED_OUT`: RunPod's execution timeout.
    TimedOut,
}

impl Job {
    /// The job's status, or an error for one RunPod does not document.
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

impl RunPodClient {
    /// A client with compiled-in TLS roots ([`crate::tls`]).
    pub fn new(config: RunPodConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::rustls_config())
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { http, config })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &RunPodConfig {
        &self.config
    }

    /// `{base_url}/{endpoint}/{path}`; the catalogue checked every
    /// endpoint id at the cold start (letters, digits, `-`, `_`).
    fn url(&self, endpoint: &str, path: &str) -> String {
        format!("{}/{}/{}", self.config.base_url, endpoint, path)
    }

    /// The URL of `op` (`status`, `stream`, `cancel`) on `job_id`, or
    /// `None` for an id that is not one RunPod gives (letters, digits, `-`
    /// and `_`, at most 128): it never becomes part of a path.
    fn job_url(&self, endpoint: &str, op: &str, job_id: &str) -> Option<String> {
        is_runpod_id(job_id).then(|| self.url(endpoint, &format!("{op}/{job_id}")))
    }

    /// `POST {endpoint}/run`: queues a job of `input` ([`build_input`])
    /// and returns its id at once. With a `webhook`, RunPod posts the
    /// finished job there. A job read with [`RunPodClient::stream`] needs
    /// `"stream": true` in its input for the vLLM worker to stream.
    pub async fn submit(
        &self,
        endpoint: &str,
        input: Value,
        webhook: Option<&str>,
        deadline: Instant,
    ) -> Result<String, RunPodError> {
        let mut body = json!({ "input": input });
        if let Some(url) = webhook {
            body["webhook"] = json!(url);
        }
        let url = self.url(endpoint, "run");
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

    /// `POST {endpoint}/runsync?wait=<ms>`: queues a job of `input` and
    /// holds the call until the job is final or `until` comes, whichever is
    /// first; its id and where it stands. RunPod answers as soon as the job
    /// ends, so a reply costs no polling lag and no `status` call (docs,
    /// "Operation reference", /runsync: `wait` 1 000–300 000 ms, default
    /// 90 s; a value outside is refused with 400). A job still running when
    /// the wait ends keeps running, and its `webhook` is posted when it ends
    /// (docs, "Send API requests", Webhook notifications).
    ///
    /// RunPod keeps a runsync job's result one minute after it ends (a
    /// `run` job's 30), so a runsync job is queued only with a `webhook`:
    /// RunPod posts the ended job there at once and twice more 10 s apart,
    /// and the webhook reads it well inside that minute (README, "Scaling
    /// on RunPod"). Without a webhook, or with less than the smallest
    /// `wait` left, the job goes to `run` (kept 30 minutes for the reads
    /// that complete it later) and is polled until `until`. The id, once
    /// known, comes with where the job stands or why that is not known.
    pub async fn submit_and_wait(
        &self,
        endpoint: &str,
        input: Value,
        webhook: Option<&str>,
        until: Instant,
        deadline: Instant,
    ) -> Result<(String, Result<JobPoll, RunPodError>), RunPodError> {
        let left = until.saturating_duration_since(Instant::now());
        if left < RUNSYNC_MIN_WAIT || webhook.is_none() {
            let id = self.submit(endpoint, input, webhook, deadline).await?;
            let waited = self.wait(endpoint, &id, until).await;
            return Ok((id, waited));
        }
        let mut body = json!({ "input": input });
        if let Some(url) = webhook {
            body["webhook"] = json!(url);
        }
        let url = self.url(endpoint, "runsync");
        // RunPod answers when the wait ends: each attempt's timeout leaves it
        // the usual time to answer after that (a timeout on our side would
        // leave a job running whose id never came).
        let job = self
            .call(
                || {
                    let left = until.saturating_duration_since(Instant::now());
                    let wait = left.clamp(RUNSYNC_MIN_WAIT, RUNSYNC_MAX_WAIT);
                    self.http
                        .post(&url)
                        .query(&[("wait", wait.as_millis() as u64)])
                        .json(&body)
                },
                left.min(RUNSYNC_MAX_WAIT) + self.config.request_timeout,
                deadline,
                Idempotent::No,
            )
            .await?;
        let id = job.id()?.to_owned();
        let poll = JobPoll::of(job);
        Ok((id, poll))
    }

    /// Polls the job until it is final or `until` comes; the job is left
    /// running in the second case.
    pub async fn wait(
        &self,
        endpoint: &str,
        job_id: &str,
        until: Instant,
    ) -> Result<JobPoll, RunPodError> {
        let mut delay = self.config.poll_initial_delay;
        loop {
            if Instant::now() + delay >= until {
                return Ok(JobPoll::Running);
            }
            sleep(delay).await;
            delay = (delay * 3 / 2).min(self.config.poll_max_delay);
            match self.poll(endpoint, job_id, until).await {
                Ok(JobPoll::Running) => {}
                Err(RunPodError::Deadline { .. }) => return Ok(JobPoll::Running),
                other => return other,
            }
        }
    }

    /// One `status` call. A job RunPod no longer knows (its result expired)
    /// is `Err(Status { status: 404, .. })`.
    pub async fn poll(
        &self,
        endpoint: &str,
        job_id: &str,
        deadline: Instant,
    ) -> Result<JobPoll, RunPodError> {
        JobPoll::of(self.status(endpoint, job_id, deadline).await?)
    }

    /// One `GET stream` call: the chunks produced since the last one. A
    /// chunk of no known shape fails the call, like unusable output.
    pub async fn stream(
        &self,
        endpoint: &str,
        job_id: &str,
        deadline: Instant,
    ) -> Result<StreamPoll, RunPodError> {
        let url = self
            .job_url(endpoint, "stream", job_id)
            .ok_or_else(|| not_a_job(job_id))?;
        let job = self
            .call(
                || self.http.request(Method::GET, &url),
                self.config.request_timeout,
                deadline,
                Idempotent::Yes,
            )
            .await?;
        let (mut pieces, mut usage) = (Vec::new(), UsageSum::default());
        for chunk in job.stream.iter().flatten() {
            let output = chunk.get("output").unwrap_or(chunk);
            let (text, reported) = parse_chunk(output).map_err(|source| RunPodError::Output {
                job_id: job_id.to_owned(),
                source,
            })?;
            pieces.push(text);
            usage.add(reported);
        }
        let end = match job.state()? {
            JobState::Queued | JobState::Running => None,
            JobState::Completed => Some(StreamEnd::Completed),
            JobState::Cancelled => Some(StreamEnd::Cancelled),
            _ => match completion_of(Job {
                id: Some(job_id.to_owned()),
                ..job
            }) {
                Err(e) => Some(StreamEnd::Failed(e)),
                Ok(_) => Some(StreamEnd::Completed),
            },
        };
        Ok(StreamPoll {
            pieces,
            usage: usage.total(),
            end,
        })
    }

    /// `POST cancel`: stops the job (a job already final stays as it is).
    pub async fn cancel(
        &self,
        endpoint: &str,
        job_id: &str,
        deadline: Instant,
    ) -> Result<(), RunPodError> {
        let url = self
            .job_url(endpoint, "cancel", job_id)
            .ok_or_else(|| not_a_job(job_id))?;
        self.call(
            || self.http.post(&url),
            self.config.request_timeout,
            deadline,
            Idempotent::Yes,
        )
        .await?;
        Ok(())
    }

    async fn status(
        &self,
        endpoint: &str,
        job_id: &str,
        deadline: Instant,
    ) -> Result<Job, RunPodError> {
        let url = self
            .job_url(endpoint, "status", job_id)
            .ok_or_else(|| not_a_job(job_id))?;
        self.call(
            || self.http.request(Method::GET, &url),
            self.config.request_timeout,
            deadline,
            Idempotent::Yes,
        )
        .await
    }
}

/// Where a job stands.
#[derive(Debug)]
pub enum JobPoll {
    /// Queued or running.
    Running,
    /// Final: the reply, or the error the job ended with.
    Done(Result<Completion, RunPodError>),
}

impl JobPoll {
    /// Where `job` stands: running, or final with its reply or error.
    pub fn of(job: Job) -> Result<Self, RunPodError> {
        Ok(match job.state()? {
            JobState::Queued | JobState::Running => JobPoll::Running,
            _ => JobPoll::Done(completion_of(job)),
        })
    }
}

/// A final job to a reply, or to the error it stands for.
pub fn completion_of(job: Job) -> Result<Completion, RunPodError> {
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
