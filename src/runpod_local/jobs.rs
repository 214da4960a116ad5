//! A job's life: `IN_QUEUE` -> `IN_PROGRESS` -> `COMPLETED` / `FAILED` /
//! `CANCELLED` / `TIMED_OUT`, its webhook delivery, and how `status` shows it.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use serde_json::{json, Value};
use tokio::{sync::Notify, time::Instant};

use super::LocalRunPod;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    InQueue,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl Status {
    const ALL: [(Status, &'static str); 6] = [
        (Status::InQueue, "IN_QUEUE"),
        (Status::InProgress, "IN_PROGRESS"),
        (Status::Completed, "COMPLETED"),
        (Status::Failed, "FAILED"),
        (Status::Cancelled, "CANCELLED"),
        (Status::TimedOut, "TIMED_OUT"),
    ];

    fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(s, _)| *s == self).unwrap().1
    }

    fn parse(word: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, w)| *w == word).map(|(s, _)| *s)
    }

    pub(super) fn is_final(self) -> bool {
        !matches!(self, Status::InQueue | Status::InProgress)
    }
}

pub(super) struct Job {
    /// The endpoint it was submitted to: RunPod's job operations name the
    /// endpoint (`/v2/{endpoint_id}/status/{job_id}`, docs "Job
    /// operations"), and a job is not found at another one.
    endpoint: String,
    pub(super) status: Status,
    output: Option<Value>,
    error: Option<String>,
    pub(super) submitted: Instant,
    started: Option<Instant>,
    pub(super) finished: Option<Instant>,
    /// Position in the scripted status sequence.
    sequence_pos: usize,
    /// Where the finished job is posted, as RunPod's `webhook` field asks.
    webhook: Option<String>,
    /// A streaming job's chunks written so far (its input said `"stream": true`).
    chunks: Vec<Value>,
    /// How many of `chunks` `GET stream` has handed out.
    streamed: usize,
    /// When each chunk was written.
    pub(super) chunk_times: Vec<Instant>,
    pub(super) release: Arc<Notify>,
    /// Queued by `runsync`: its result is kept for less time.
    sync: bool,
    /// Woken when the job ends, for a `runsync` call holding on it.
    pub(super) ended: Arc<Notify>,
}

impl LocalRunPod {
    /// Holds until job `id` is final or `wait` passes, as `runsync` does;
    /// the job as `status` shows it then.
    pub(super) async fn hold_on(&self, id: &str, wait: Duration) -> Option<Value> {
        let until = Instant::now() + wait;
        loop {
            let ended = {
                let jobs = self.0.jobs.lock().unwrap();
                let job = jobs.get(id)?;
                if job.status.is_final() {
                    break;
                }
                job.ended.clone()
            };
            let woken = ended.notified();
            tokio::pin!(woken);
            // Registered before the second look, so an end between the two
            // is not missed.
            woken.as_mut().enable();
            let final_now = self.0.jobs.lock().unwrap().get(id)?.status.is_final();
            if final_now || tokio::time::timeout_at(until, woken).await.is_err() {
                break;
            }
        }
        self.view(id, true)
    }

    /// Whether job `id` is known at `endpoint`.
    pub(super) fn at(&self, endpoint: &str, id: &str) -> bool {
        let jobs = self.0.jobs.lock().unwrap();
        jobs.get(id).is_some_and(|j| j.endpoint == endpoint)
    }

    /// Queues a job for `input` at `endpoint` (by `runsync` when `sync`);
    /// its id.
    pub(super) fn submit(
        &self,
        endpoint: &str,
        input: Value,
        webhook: Option<String>,
        sync: bool,
    ) -> String {
        self.0.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let submission = (endpoint.to_owned(), input.clone());
        self.0.submissions.lock().unwrap().push(submission);
        // RunPod's runsync ids read "sync-<uuid>-u1" (docs, "Operation
        // reference", the /runsync response).
        let id = if sync {
            format!("sync-{}-u1", uuid::Uuid::new_v4())
        } else {
            format!("local-{}", uuid::Uuid::new_v4())
        };
        let release = Arc::new(Notify::new());
        let job = Job {
            endpoint: endpoint.to_owned(),
            status: Status::InQueue,
            output: None,
            error: None,
            submitted: Instant::now(),
            started: None,
            finished: None,
            sequence_pos: 0,
            webhook,
            chunks: Vec::new(),
            streamed: 0,
            chunk_times: Vec::new(),
            release: release.clone(),
            sync,
            ended: Arc::new(Notify::new()),
        };
        self.0.jobs.lock().unwrap().insert(id.clone(), job);
        tokio::spawn(self.clone().execute(id.clone(), input, release));
        id
    }

    /// Moves a job that is not final yet to `status`; false when it was
    /// gone or final already. A job that ends is posted to its webhook.
    pub(super) fn set(
        &self,
        id: &str,
        status: Status,
        result: Result<Option<Value>, String>,
    ) -> bool {
        let webhook = {
            let mut jobs = self.0.jobs.lock().unwrap();
            let Some(job) = jobs.get_mut(id).filter(|j| !j.status.is_final()) else {
                return false;
            };
            job.status = status;
            if status == Status::InProgress {
                job.started = Some(Instant::now());
            } else if status.is_final() {
                job.finished = Some(Instant::now());
                job.ended.notify_waiters();
                (job.output, job.error) = match result {
                    Ok(output) => (output, None),
                    Err(e) => (None, Some(e)),
                };
            }
            job.webhook.clone().filter(|_| status.is_final())
        };
        if let (Some(url), Some(body)) = (webhook, self.view(id, false)) {
            tokio::spawn(self.clone().deliver(url, body));
        }
        true
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

    /// Runs a job through the settings' delays and faults to its end.
    async fn execute(self, id: String, input: Value, release: Arc<Notify>) {
        let s = &self.0.settings;
        tokio::time::sleep(s.queue_delay).await;
        if !self.set(&id, Status::InProgress, Ok(None)) {
            return; // cancelled while queued
        }
        let started = Instant::now();
        let failed = s.failure_rate > 0.0 && rand::random::<f64>() < s.failure_rate;
        let result = if failed {
            Err("injected failure (RUNPOD_LOCAL_FAILURE_RATE)".to_owned())
        } else {
            s.responder.answer(&self.0.http, &input).await
        };
        let until = |d: Duration| d.saturating_sub(started.elapsed());
        let result = match result {
            Ok(output) if input["stream"] == true => {
                // Written piece by piece over the execution time, as the
                // vLLM worker streams: the final output is every chunk.
                match self.write_in_pieces(&id, &output, s.execution_time).await {
                    Some(chunks) => Ok(Value::Array(chunks)),
                    None => return, // cancelled while writing
                }
            }
            other => other,
        };
        match s.execution_timeout {
            Some(limit) if s.execution_time > limit => {
                tokio::time::sleep(until(limit)).await;
                let timeout = Err("execution timeout exceeded".into());
                self.set(&id, Status::TimedOut, timeout);
                return;
            }
            _ => tokio::time::sleep(until(s.execution_time)).await,
        }
        if s.hold {
            release.notified().await;
        }
        let status = match result {
            Ok(_) => Status::Completed,
            Err(_) => Status::Failed,
        };
        self.set(&id, status, result.map(Some));
    }

    /// Writes `output`'s text as chunks of a word or so, spread over
    /// `over`; the chunks, or `None` when the job was cancelled meanwhile.
    async fn write_in_pieces(
        &self,
        id: &str,
        output: &Value,
        over: Duration,
    ) -> Option<Vec<Value>> {
        let whole = chat_shared::runpod::parse_output(Some(output)).ok()?;
        let pieces: Vec<&str> = whole.text.split_inclusive(' ').collect();
        let pause = over / pieces.len().max(1) as u32;
        let n = pieces.len() as u64;
        for (i, piece) in (1..).zip(&pieces) {
            tokio::time::sleep(pause).await;
            let mut chunk = json!({"choices": [{"tokens": [piece]}]});
            // As the vLLM worker streams (worker-vllm, src/engine.py,
            // _generate_vllm): every batch carries running totals, the
            // prompt's tokens and the output's so far, the last one whole.
            if let Some(u) = whole.usage {
                let so_far = u.output_tokens * i / n;
                chunk["usage"] = json!({"input": u.input_tokens, "output": so_far});
            }
            let mut jobs = self.0.jobs.lock().unwrap();
            let job = jobs.get_mut(id).filter(|j| !j.status.is_final())?;
            job.chunks.push(chunk);
            job.chunk_times.push(Instant::now());
        }
        let jobs = self.0.jobs.lock().unwrap();
        jobs.get(id).map(|j| j.chunks.clone())
    }

    /// `GET stream`: the job's status and the chunks written since the
    /// last call (a job that does not stream: its whole output once final).
    pub(super) fn stream_view(&self, id: &str) -> Option<Value> {
        let view = self.view(id, false)?;
        let mut jobs = self.0.jobs.lock().unwrap();
        let job = jobs.get_mut(id)?;
        let chunks: Vec<Value> = if job.chunks.is_empty() {
            match view.get("output") {
                Some(Value::Array(parts)) => parts.clone(),
                Some(other) => vec![other.clone()],
                None => vec![],
            }
        } else {
            let new = job.chunks[job.streamed..].to_vec();
            job.streamed = job.chunks.len();
            new
        };
        let stream: Vec<Value> = chunks.into_iter().map(|c| json!({"output": c})).collect();
        Some(json!({"id": id, "status": view["status"], "stream": stream}))
    }

    /// The job as the API shows it; with a status sequence and `advance`,
    /// the next step of it.
    pub(super) fn view(&self, id: &str, advance: bool) -> Option<Value> {
        let mut jobs = self.0.jobs.lock().unwrap();
        let job = jobs.get_mut(id)?;
        let status = self.scripted(job, advance).unwrap_or(job.status);
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

    /// The status the scripted sequence shows next, if there is one.
    fn scripted(&self, job: &mut Job, advance: bool) -> Option<Status> {
        let seq = self.0.settings.status_sequence.as_ref()?;
        if job.status == Status::Cancelled {
            return None;
        }
        let pos = job.sequence_pos.min(seq.len().saturating_sub(1));
        match Status::parse(seq.get(pos)?)? {
            // A scripted COMPLETED waits for the responder's output.
            Status::Completed if job.output.is_none() => Some(Status::InProgress),
            step => {
                if advance {
                    job.sequence_pos += 1;
                }
                Some(step)
            }
        }
    }

    /// Drops final jobs whose result has outlived `result_ttl`.
    pub(super) fn purge_expired(&self) {
        let s = &self.0.settings;
        self.0.jobs.lock().unwrap().retain(|_, j| {
            let ttl = if j.sync {
                s.sync_result_ttl
            } else {
                s.result_ttl
            };
            j.finished.is_none_or(|f| f.elapsed() < ttl)
        });
    }
}
