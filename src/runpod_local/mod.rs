//! A local stand-in for a RunPod serverless endpoint, speaking the queue
//! API the service uses (`run`, `runsync`, `status`, `stream`, `cancel`,
//! `health`),
//! with RunPod's job states, results kept for a while, webhooks posted when
//! a job ends, and the Bearer key checked.
//!
//! Answers come from a [`Responder`]: by default the clearly labelled
//! development responder (no model is called), or any OpenAI-compatible
//! chat completions server (llama.cpp, vLLM, Ollama). The knobs in
//! [`Settings`] (queue delay, execution time, failure rate, a scripted status
//! sequence, holding jobs until released) make it a fault injector for tests.
//!
//! - `settings.rs`: the knobs and the `RUNPOD_LOCAL_*` variables;
//! - `jobs.rs`: a job's life, its webhook, and how `status` shows it;
//! - `responder.rs`: a job's answer;
//! - `routes.rs`: the HTTP routes.

mod jobs;
mod responder;
mod routes;
mod settings;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

pub use settings::{Responder, Settings, Vars, DEV_REPLY_PREFIX};

/// What the tests and the benchmark count.
#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    status_calls: AtomicU64,
    stream_calls: AtomicU64,
    cancels: AtomicU64,
    throttled_runs: AtomicU64,
}

struct Inner {
    settings: Settings,
    /// When the endpoint was made (the `run` throttle counts from here).
    started: std::time::Instant,
    jobs: Mutex<HashMap<String, jobs::Job>>,
    /// Every `run`'s endpoint and `input`, in order.
    submissions: Mutex<Vec<(String, serde_json::Value)>>,
    counters: Counters,
    http: reqwest::Client,
}

/// One local endpoint; clones share its jobs.
#[derive(Clone)]
pub struct LocalRunPod(Arc<Inner>);

impl LocalRunPod {
    /// An endpoint with no jobs yet.
    pub fn new(settings: Settings) -> Self {
        Self(Arc::new(Inner {
            settings,
            started: std::time::Instant::now(),
            jobs: Mutex::new(HashMap::new()),
            submissions: Mutex::new(Vec::new()),
            counters: Counters::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("HTTP client"),
        }))
    }

    /// Serves on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, routes::router(self)).await
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

    /// Every job's endpoint and `input` as `run` received them, oldest first.
    pub fn submissions(&self) -> Vec<(String, serde_json::Value)> {
        self.0.submissions.lock().unwrap().clone()
    }

    /// Jobs submitted so far.
    pub fn submitted(&self) -> u64 {
        self.0.counters.submitted.load(Ordering::Relaxed)
    }

    /// `status` calls answered so far.
    pub fn status_calls(&self) -> u64 {
        self.0.counters.status_calls.load(Ordering::Relaxed)
    }

    /// `stream` calls answered so far.
    pub fn stream_calls(&self) -> u64 {
        self.0.counters.stream_calls.load(Ordering::Relaxed)
    }

    /// When each chunk of the newest streaming job was written.
    pub fn newest_chunk_times(&self) -> Vec<tokio::time::Instant> {
        let jobs = self.0.jobs.lock().unwrap();
        let newest = jobs.values().filter(|j| !j.chunk_times.is_empty());
        let newest = newest.max_by_key(|j| j.submitted);
        newest.map(|j| j.chunk_times.clone()).unwrap_or_default()
    }

    /// Every RunPod call that reached a job so far: `run` and `runsync`,
    /// `status`, `stream` and `cancel`.
    pub fn calls(&self) -> u64 {
        self.submitted() + self.status_calls() + self.stream_calls() + self.cancels()
    }

    /// When the newest job ended, once it has.
    pub fn newest_end(&self) -> Option<tokio::time::Instant> {
        let jobs = self.0.jobs.lock().unwrap();
        jobs.values().max_by_key(|j| j.submitted)?.finished
    }

    /// `run` calls refused with 429 by the throttle so far.
    pub fn throttled_runs(&self) -> u64 {
        self.0.counters.throttled_runs.load(Ordering::Relaxed)
    }

    /// `cancel` calls answered so far.
    pub fn cancels(&self) -> u64 {
        self.0.counters.cancels.load(Ordering::Relaxed)
    }

    /// Forgets a job as if its result had expired.
    pub fn expire(&self, job: &str) {
        self.0.jobs.lock().unwrap().remove(job);
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
}
