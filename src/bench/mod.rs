//! The benchmark's parts (`src/bin/bench.rs` puts them together): each
//! function's release binary run the way Lambda runs it, under a
//! [`runtime::Runtime`] of its own, against DynamoDB Local behind a
//! counting [`proxy::DynamoProxy`] and the local RunPod endpoint.
//!
//! - `runtime.rs`: the Lambda Runtime API;
//! - `proxy.rs`: the DynamoDB call counter;
//! - `report.rs`: the markdown tables;
//! - here: one function's row (cold starts, warm invocations, calls, memory)
//!   and one point of a page-size sweep.

pub mod proxy;
pub mod report;
pub mod runtime;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    measure::{cpu_time, ms, peak_rss_kb, scheduled_time, us},
    runpod_local::LocalRunPod,
};
use proxy::DynamoProxy;
use runtime::Runtime;

/// One row of the table: a binary and the event it is invoked with.
pub struct Function {
    /// The row's name.
    pub name: &'static str,
    /// The binary in the bench's binary directory.
    pub bin: &'static str,
    /// The API Gateway event, as JSON.
    pub event: String,
    /// The HTTP status every invocation must answer.
    pub status: u16,
}

/// What every measurement shares.
pub struct Bench {
    /// Where the functions' binaries are (`BENCH_BIN_DIR`).
    pub bin_dir: PathBuf,
    /// The functions' environment.
    pub env: Vec<(String, String)>,
    /// Counts the functions' DynamoDB calls.
    pub proxy: DynamoProxy,
    /// The RunPod stand-in the functions call.
    pub runpod: LocalRunPod,
    /// Warm invocations per row.
    pub warm: usize,
    /// Cold starts per row.
    pub cold_starts: usize,
}

/// A started function process and its Runtime API.
struct Running {
    rt: Runtime,
    child: tokio::process::Child,
    started: Instant,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Invokes with `event`, asserting the answer's status.
    async fn invoke(&self, event: &str, status: u16) -> Duration {
        let t = Instant::now();
        let (got, body) = self.rt.invoke(event).await;
        assert_eq!(got, status, "{}", String::from_utf8_lossy(&body));
        t.elapsed()
    }
}

impl Bench {
    /// Starts `bin` under a new Runtime API, as Lambda starts a cold function.
    async fn start(&self, bin: &str) -> Running {
        self.start_with(bin, &[]).await
    }

    /// [`Bench::start`] with `extra` set over the functions' environment.
    async fn start_with(&self, bin: &str, extra: &[(&str, &str)]) -> Running {
        let (rt, addr) = Runtime::start().await;
        let bin = self.bin_dir.join(bin);
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", addr)
            .env("AWS_LAMBDA_FUNCTION_NAME", bin.file_name().unwrap())
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd.spawn().expect("start the function binary");
        Running { rt, child, started }
    }

    /// The function's row: cold starts, then warm invocations in one process.
    pub async fn row(&self, f: &Function) -> Value {
        eprintln!("{}: cold starts", f.name);
        let (inits, firsts) = self.cold_starts(f).await;
        eprintln!("{}: {} warm invocations", f.name, self.warm);
        let mut run = self.start(f.bin).await;
        for _ in 0..20 {
            run.invoke(&f.event, f.status).await;
        }
        let (ddb_calls, rp_calls) = self.calls_of_one(&run, f).await;
        let pid = run.pid();
        let (sched0, ticks0) = (scheduled_time(pid), cpu_time(pid));
        let mut lat = Vec::with_capacity(self.warm);
        for _ in 0..self.warm {
            lat.push(run.invoke(&f.event, f.status).await);
        }
        let n = self.warm as u32;
        let (scheduled, ticks) = (scheduled_time(pid) - sched0, cpu_time(pid));
        let rss = peak_rss_kb(pid);
        run.child.kill().await.ok();
        lat.sort();
        let bin = self.bin_dir.join(f.bin);
        json!({
            "init_ms_median": ms(inits[inits.len() / 2]),
            "init_ms_max": ms(*inits.last().unwrap()),
            "first_invocation_ms_median": ms(firsts[firsts.len() / 2]),
            "warm_ms_p50": ms(percentile(&lat, 0.5)),
            "warm_ms_p99": ms(percentile(&lat, 0.99)),
            "cpu_us_per_invocation": us(scheduled / n),
            "user_cpu_us_per_invocation": us((ticks.0 - ticks0.0) / n),
            "system_cpu_us_per_invocation": us((ticks.1 - ticks0.1) / n),
            "peak_rss_mb": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
            "binary_mb": megabytes(std::fs::metadata(&bin).unwrap().len()),
            "deflated_mb": megabytes(deflated_size(&bin)),
            "dynamodb_calls_per_invocation": ddb_calls,
            "runpod_calls_per_invocation": rp_calls,
        })
    }

    /// Init times (start to the first `next`) and first invocations
    /// (which pay for what init deferred: connections, TLS roots), sorted.
    async fn cold_starts(&self, f: &Function) -> (Vec<Duration>, Vec<Duration>) {
        let (mut inits, mut firsts) = (Vec::new(), Vec::new());
        for _ in 0..self.cold_starts {
            let mut run = self.start(f.bin).await;
            run.invoke(&f.event, f.status).await;
            let init = run.rt.first_next().unwrap() - run.started;
            inits.push(init);
            firsts.push(run.started.elapsed() - init);
            run.child.kill().await.ok();
        }
        inits.sort();
        firsts.sort();
        (inits, firsts)
    }

    /// One invocation's calls, counted at the proxy and the RunPod stand-in.
    async fn calls_of_one(&self, run: &Running, f: &Function) -> (proxy::Counts, u64) {
        let runpod = &self.runpod;
        let runpod_calls = || runpod.submitted() + runpod.status_calls() + runpod.stream_calls();
        let (ddb_before, rp_before) = (self.proxy.snapshot(), runpod_calls());
        run.invoke(&f.event, f.status).await;
        (self.proxy.since(&ddb_before), runpod_calls() - rp_before)
    }

    /// How long a streamed reply's pieces take from RunPod to the client:
    /// `runs` warm streamed replies of `bin` against `runpod` (at
    /// `runpod_url`, writing its chunks spread over its execution time),
    /// each chunk's write at RunPod paired with its `message.delta`'s
    /// arrival at the Runtime API.
    pub async fn stream_delays(
        &self,
        bin: &str,
        event: &str,
        runpod: &LocalRunPod,
        runpod_url: &str,
        runs: usize,
    ) -> Value {
        let run = self
            .start_with(bin, &[("RUNPOD_BASE_URL", runpod_url)])
            .await;
        run.invoke(event, 200).await;
        let (mut delays, mut chunks) = (Vec::new(), 0);
        for _ in 0..runs {
            run.invoke(event, 200).await;
            let written = runpod.newest_chunk_times();
            let arrived = delta_arrivals(&run.rt.arrivals());
            assert_eq!(written.len(), arrived.len(), "one delta per chunk");
            chunks = written.len();
            let pairs = written.iter().zip(arrived);
            delays.extend(pairs.map(|(w, a)| a.saturating_duration_since(w.into_std())));
        }
        delays.sort();
        json!({
            "replies": runs,
            "chunks_per_reply": chunks,
            "delay_ms_p50": ms(percentile(&delays, 0.5)),
            "delay_ms_p99": ms(percentile(&delays, 0.99)),
            "delay_ms_max": ms(*delays.last().unwrap()),
        })
    }

    /// How long a reply takes from its job's end at RunPod to the client
    /// (issue 28): for each job duration, `processes` instances of `bin`
    /// (each with a local RunPod of its own whose jobs run exactly that
    /// long, at the deployed poll settings) make `turns` replies each, at
    /// once; a streamed reply's end is its `message.completed` event. With
    /// the lags, the RunPod calls per turn.
    pub async fn reply_lags(
        &self,
        bin: &str,
        event: &str,
        durations: &[Duration],
        processes: usize,
        turns: usize,
    ) -> Value {
        let mut rows = serde_json::Map::new();
        for &d in durations {
            eprintln!("{bin}: lag after jobs of {} s", d.as_secs_f64());
            let instances = (0..processes).map(|_| self.lags_of_one(bin, event, d, turns));
            let measured = futures::future::join_all(instances).await;
            let mut lags: Vec<Duration> = measured.iter().flat_map(|(l, _)| l.clone()).collect();
            let calls: u64 = measured.iter().map(|(_, c)| c).sum();
            lags.sort();
            rows.insert(
                format!("{}", d.as_secs_f64()),
                json!({
                    "turns": lags.len(),
                    "lag_ms_p50": ms(percentile(&lags, 0.5)),
                    "lag_ms_p99": ms(percentile(&lags, 0.99)),
                    "lag_ms_max": ms(*lags.last().unwrap()),
                    "runpod_calls_per_turn": calls as f64 / lags.len() as f64,
                }),
            );
        }
        Value::Object(rows)
    }

    /// One instance's lags and RunPod calls over `turns` replies to jobs
    /// of `duration` (after a first, uncounted one).
    async fn lags_of_one(
        &self,
        bin: &str,
        event: &str,
        duration: Duration,
        turns: usize,
    ) -> (Vec<Duration>, u64) {
        let runpod = LocalRunPod::new(crate::runpod_local::Settings {
            api_key: Some("bench-key".into()),
            execution_time: duration,
            ..Default::default()
        });
        let url = runpod.clone().spawn().await;
        let hooks = format!("{}/api/chat/runpod/webhook", webhook_sink().await);
        // As deployed: the deployed polling (the other rows poll every 5 ms)
        // and a webhook (RunPod's deliveries are answered 200 and dropped).
        let extra = [
            ("RUNPOD_BASE_URL", url.as_str()),
            ("RUNPOD_POLL_INITIAL_MS", "250"),
            ("WEBHOOK_BASE_URL", hooks.as_str()),
        ];
        let run = self.start_with(bin, &extra).await;
        run.invoke(event, 200).await;
        let calls_before = runpod.calls();
        let mut lags = Vec::with_capacity(turns);
        for _ in 0..turns {
            run.invoke(event, 200).await;
            let answered = match completed_arrival(&run.rt.arrivals()) {
                Some(at) if bin == "stream-message" => at,
                _ => Instant::now(),
            };
            let ended = runpod.newest_end().expect("the turn's job ended");
            lags.push(answered.saturating_duration_since(ended.into_std()));
        }
        (lags, runpod.calls() - calls_before)
    }

    /// Whether `bin` is among the binaries measured (older builds lack new ones).
    pub fn has(&self, bin: &str) -> bool {
        self.bin_dir.join(bin).exists()
    }

    /// The DynamoDB calls one streamed reply of `bin` makes against
    /// `runpod_url` (whose jobs write their chunks over its execution time).
    pub async fn calls_of_a_slow_stream(&self, bin: &str, event: &str, runpod_url: &str) -> Value {
        let run = self
            .start_with(bin, &[("RUNPOD_BASE_URL", runpod_url)])
            .await;
        run.invoke(event, 200).await;
        const RUNS: u64 = 5;
        let before = self.proxy.snapshot();
        for _ in 0..RUNS {
            run.invoke(event, 200).await;
        }
        let calls = self.proxy.since(&before);
        let per_reply: serde_json::Map<String, Value> = calls
            .iter()
            .map(|(action, n)| (action.to_string(), json!(*n as f64 / RUNS as f64)))
            .collect();
        Value::Object(per_reply)
    }

    /// Time from an attach (`attach-stream`) to its first event: to a
    /// reply `stream_bin` is writing (attached 300 ms into it, without an
    /// id), and to a final one (`Last-Event-ID: 5`), `runs` times each;
    /// `stream_event(id)` continues conversation `id`, `attach_event(id,
    /// last)` attaches to it.
    pub async fn attach_delays(
        &self,
        stream_bin: &str,
        stream_event: &dyn Fn(Option<&str>) -> String,
        attach_event: &dyn Fn(&str, Option<u64>) -> String,
        runpod_url: &str,
        runs: usize,
    ) -> Value {
        let extra = [("RUNPOD_BASE_URL", runpod_url)];
        let stream = self.start_with(stream_bin, &extra).await;
        let attach = self.start_with("attach-stream", &extra).await;
        stream.invoke(&stream_event(None), 200).await;
        let body: Vec<u8> = stream
            .rt
            .arrivals()
            .iter()
            .flat_map(|(_, b)| b.to_vec())
            .collect();
        let body = String::from_utf8_lossy(&body);
        let id = body
            .split("\"conversation_id\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a conversation id in the stream")
            .to_owned();
        let first_event = |rt: &Runtime, asked: Instant| {
            let arrivals = rt.arrivals();
            arrivals
                .first()
                .map(|(at, _)| at.saturating_duration_since(asked))
        };
        let (mut live, mut done) = (Vec::new(), Vec::new());
        let final_event = attach_event(&id, Some(5));
        attach.invoke(&final_event, 200).await;
        for _ in 0..runs {
            let asked = Instant::now();
            attach.invoke(&final_event, 200).await;
            done.push(first_event(&attach.rt, asked).expect("an event"));
        }
        let live_event = attach_event(&id, None);
        for _ in 0..runs {
            let rt = stream.rt.clone();
            let next = stream_event(Some(&id));
            let writing = tokio::spawn(async move { rt.invoke(&next).await });
            tokio::time::sleep(Duration::from_millis(300)).await;
            let asked = Instant::now();
            attach.invoke(&live_event, 200).await;
            live.push(first_event(&attach.rt, asked).expect("an event"));
            writing.await.unwrap();
        }
        live.sort();
        done.sort();
        json!({
            "runs": runs,
            "live_first_event_ms_p50": ms(percentile(&live, 0.5)),
            "live_first_event_ms_p99": ms(percentile(&live, 0.99)),
            "final_first_event_ms_p50": ms(percentile(&done, 0.5)),
            "final_first_event_ms_p99": ms(percentile(&done, 0.99)),
        })
    }

    /// A long streamed invocation (the export of every conversation):
    /// one cold process given `timeout` per invocation (the function's
    /// `Timeout`), one invocation to warm it, then `runs` more, each
    /// timed to its last byte; the body's size, lines and end, the CPU
    /// and DynamoDB calls per invocation, and the process's peak RSS.
    pub async fn long_stream(&self, bin: &str, event: &str, timeout: Duration, runs: u32) -> Value {
        let mut run = self.start(bin).await;
        run.rt.set_invocation_time(timeout);
        let (first, body) = {
            let t = Instant::now();
            let (status, body) = run.rt.invoke(event).await;
            assert_eq!(
                status,
                200,
                "{}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            );
            (t.elapsed(), body)
        };
        let pid = run.pid();
        let (sched0, ddb_before) = (scheduled_time(pid), self.proxy.snapshot());
        let mut times = Vec::new();
        for _ in 0..runs {
            times.push(run.invoke(event, 200).await);
        }
        let cpu = (scheduled_time(pid) - sched0) / runs;
        let calls = self.proxy.since(&ddb_before);
        let calls: serde_json::Map<String, Value> = calls
            .into_iter()
            .map(|(k, v)| (k, json!(v as f64 / runs as f64)))
            .collect();
        let rss = peak_rss_kb(pid);
        run.child.kill().await.ok();
        times.sort();
        let text = String::from_utf8_lossy(&body);
        let end: Value = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        json!({
            "first_invocation_ms": ms(first),
            "ms_p50": ms(percentile(&times, 0.5)),
            "ms_max": ms(*times.last().unwrap()),
            "runs": runs,
            "body_mb": megabytes(body.len() as u64),
            "lines": text.lines().count(),
            "end": end,
            "cpu_ms_per_invocation": ms(cpu),
            "dynamodb_calls_per_invocation": calls,
            "peak_rss_mb": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
        })
    }

    /// One point of a sweep: `event` to `bin` 300 times, warm.
    pub async fn sweep_point(&self, bin: &str, event: &str) -> Value {
        const RUNS: u32 = 300;
        let mut run = self.start(bin).await;
        for _ in 0..20 {
            run.invoke(event, 200).await;
        }
        let pid = run.pid();
        let (sched0, ddb_before) = (scheduled_time(pid), self.proxy.snapshot());
        let mut lat = Vec::new();
        for _ in 0..RUNS {
            lat.push(run.invoke(event, 200).await);
        }
        let cpu = (scheduled_time(pid) - sched0) / RUNS;
        let ddb_calls: u64 = self.proxy.since(&ddb_before).values().sum();
        run.child.kill().await.ok();
        lat.sort();
        json!({
            "p50_ms": ms(percentile(&lat, 0.5)),
            "p99_ms": ms(percentile(&lat, 0.99)),
            "cpu_us_per_invocation": us(cpu),
            "dynamodb_calls_per_invocation": ddb_calls as f64 / RUNS as f64,
        })
    }

    /// The client CPU per outside call (`bench-calls`, release build),
    /// against DynamoDB Local directly: the proxy would add to the wall
    /// times only.
    pub async fn client_calls(&self, dynamodb: &str) -> Value {
        eprintln!("client CPU per call (bench-calls)");
        // In BENCH_BIN_DIR when built there, else the release build's.
        let bin = Some(self.bin_dir.join("bench-calls"))
            .filter(|b| b.exists())
            .unwrap_or_else(|| PathBuf::from("target/release/bench-calls"));
        let out = tokio::process::Command::new(bin)
            .arg(self.warm.to_string())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb)
            .stderr(Stdio::inherit())
            .output()
            .await
            .expect("run bench-calls (scripts/bench.sh builds it)");
        assert!(out.status.success(), "bench-calls failed");
        serde_json::from_slice(&out.stdout).expect("bench-calls prints JSON")
    }
}

/// The machine's CPU model and core count.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({"cpu": cpu, "cores": cores})
}

fn megabytes(bytes: u64) -> f64 {
    (bytes as f64 / 1e6 * 100.0).round() / 100.0
}

/// The file's size once deflated: about its size in a Lambda zip.
fn deflated_size(path: &Path) -> u64 {
    let data = std::fs::read(path).unwrap();
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap().len() as u64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// An HTTP server on this machine that answers every request 200 and
/// drops it: where the lag rows' RunPod posts its webhooks. Its base URL.
pub async fn webhook_sink() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// When a streamed body's `message.completed` event had fully arrived.
fn completed_arrival(pieces: &[(Instant, axum::body::Bytes)]) -> Option<Instant> {
    let mut text = String::new();
    for (at, piece) in pieces {
        text.push_str(&String::from_utf8_lossy(piece));
        if text.contains("event: message.completed\n") && text.ends_with("\n\n") {
            return Some(*at);
        }
    }
    None
}

/// When each `message.delta` event of a streamed body had fully arrived.
fn delta_arrivals(pieces: &[(Instant, axum::body::Bytes)]) -> Vec<Instant> {
    let (mut text, mut arrivals) = (String::new(), Vec::new());
    for (at, piece) in pieces {
        text.push_str(&String::from_utf8_lossy(piece));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: message.delta") {
                arrivals.push(*at);
            }
        }
    }
    arrivals
}
