//! The transport under every RunPod call: one request with the retry
//! policy (429/5xx and timeouts, jittered exponential backoff honouring
//! `Retry-After`, never a retry that could start a second job), and answers
//! read with a byte cap.

use std::time::Duration;

use rand::Rng;
use reqwest::{header::RETRY_AFTER, StatusCode};
use tokio::time::{sleep, Instant};

use super::{Job, RunPodClient, RunPodError};

/// What to do when a call fails in a way that may be worth a retry.
///
/// Every `run` is a billed GPU job, so `run` is retried only when RunPod
/// surely did not queue it: a 429 (refused before queueing) or a connection
/// that was never made. A timeout or a 5xx comes after the request was
/// sent: the job may be queued, and a retry could pay for it twice; the
/// send fails instead (the user's message is kept and they can send again).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Idempotent {
    /// A retry cannot start a second job (`status`): retry on 5xx and timeouts too.
    Yes,
    /// A retry could start a second job (`run`): retry only 429 and connect errors.
    No,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl RunPodClient {
    /// One API call with the retry policy. `timeout` bounds each attempt
    /// and `deadline` bounds them all.
    pub(super) async fn call(
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
                    let bytes = read_capped(resp, self.config.max_response_bytes).await?;
                    return serde_json::from_slice::<Job>(&bytes)
                        .map_err(|e| RunPodError::InvalidResponse(format!("not a job: {e}")));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = parse_retry_after(resp.headers().get(RETRY_AFTER));
                    let body = read_prefix(resp, ERROR_BODY_BYTES).await;
                    let error = RunPodError::Status {
                        status: status.as_u16(),
                        body: truncate(&body, 200).to_owned(),
                    };
                    let retried = status == StatusCode::TOO_MANY_REQUESTS
                        || (status.is_server_error() && idempotent == Idempotent::Yes);
                    if !retried {
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

/// A job id RunPod never gives: no such job (a 404, as RunPod would say).
pub(super) fn not_a_job(job_id: &str) -> RunPodError {
    RunPodError::Status {
        status: 404,
        body: format!("{:?} is not a RunPod job id", truncate(job_id, 40)),
    }
}

/// The most bytes of an error answer read: its start says what went wrong
/// (200 characters are kept), and a gateway's error page can be any size.
const ERROR_BODY_BYTES: usize = 4 * 1024;

/// The first `cap` bytes of an answer (as text), the rest never read.
async fn read_prefix(mut resp: reqwest::Response, cap: usize) -> String {
    let mut body = Vec::new();
    while body.len() < cap {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The body of `resp`, refused once it passes `cap` bytes (checked against
/// `Content-Length` first, then as it arrives).
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, RunPodError> {
    let too_large = || RunPodError::InvalidResponse(format!("an answer over {cap} bytes"));
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(RunPodError::Transport)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Retry-After` in seconds (the HTTP-date form is rare on APIs and ignored).
fn parse_retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let secs: f64 = value?.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(60.0)))
}

pub(super) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
