//! The benchmark: runs each function's release binary the way Lambda does,
//! under a minimal Lambda Runtime API of its own, against DynamoDB Local
//! (through a proxy that counts calls) and the local RunPod endpoint
//! answering at once. Prints a table and writes it as JSON.
//!
//! Run with `scripts/bench.sh` (it builds the release binaries and starts
//! DynamoDB Local). Arguments: `[OUT_JSON] [WARM_INVOCATIONS]`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::Write,
    path::{Path as FsPath, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get, post},
    Router,
};
use chat_service_dev::{
    apigw::Event,
    measure::{cpu_time, ms, peak_rss_kb, scheduled_time, us},
    runpod_local::{LocalRunPod, Settings},
    seed::{seed_conversations, seed_messages},
    table::TableDefinition,
    DEV_JWT_SECRET,
};
use chat_shared::{auth::issue_token, domain::ConversationId, App};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

// ---------------------------------------------------------------------------
// A minimal Lambda Runtime API: one per function process.

#[derive(Default)]
struct RuntimeState {
    queue: Mutex<VecDeque<(String, String)>>,
    queued: Notify,
    waiting: Mutex<HashMap<String, oneshot::Sender<(u16, Bytes)>>>,
    first_next: Mutex<Option<Instant>>,
}

#[derive(Clone)]
struct Runtime(Arc<RuntimeState>);

impl Runtime {
    async fn start() -> (Self, String) {
        let rt = Runtime(Arc::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(rt.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (rt, addr)
    }

    /// Invokes the function with `event`; returns its status code and body.
    async fn invoke(&self, event: &str) -> (u16, Bytes) {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.0.waiting.lock().unwrap().insert(id.clone(), tx);
        self.0
            .queue
            .lock()
            .unwrap()
            .push_back((id, event.to_owned()));
        self.0.queued.notify_one();
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the function did not answer within 60 s")
            .expect("runtime dropped the invocation")
    }

    fn first_next(&self) -> Option<Instant> {
        *self.0.first_next.lock().unwrap()
    }
}

async fn next(State(rt): State<Runtime>) -> Response {
    rt.0.first_next
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    loop {
        let item = rt.0.queue.lock().unwrap().pop_front();
        if let Some((id, event)) = item {
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 28_000;
            return (
                [
                    ("lambda-runtime-aws-request-id", id),
                    ("lambda-runtime-deadline-ms", deadline.to_string()),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:bench".to_owned(),
                    ),
                    (
                        "lambda-runtime-trace-id",
                        "Root=1-00000000-000000000000000000000000".to_owned(),
                    ),
                    ("content-type", "application/json".to_owned()),
                ],
                event,
            )
                .into_response();
        }
        rt.0.queued.notified().await;
    }
}

fn complete(rt: &Runtime, id: &str, status: u16, body: Bytes) -> StatusCode {
    if let Some(tx) = rt.0.waiting.lock().unwrap().remove(id) {
        let _ = tx.send((status, body));
    }
    StatusCode::ACCEPTED
}

async fn response(State(rt): State<Runtime>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    // The HTTP status lives inside the API Gateway response document.
    let status = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["statusCode"].as_u64())
        .unwrap_or(0) as u16;
    complete(&rt, &id, status, body)
}

async fn error(State(rt): State<Runtime>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    complete(&rt, &id, 0, body)
}

async fn init_error(body: Bytes) -> StatusCode {
    eprintln!("function init error: {}", String::from_utf8_lossy(&body));
    StatusCode::ACCEPTED
}

// ---------------------------------------------------------------------------
// A proxy in front of DynamoDB Local that counts calls by operation.

#[derive(Clone)]
struct DynamoProxy {
    target: String,
    http: reqwest::Client,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl DynamoProxy {
    async fn start(target: String) -> (Self, String) {
        let proxy = DynamoProxy {
            target,
            http: reqwest::Client::new(),
            counts: Arc::default(),
        };
        let app = Router::new()
            .route("/", any(forward))
            .with_state(proxy.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (proxy, url)
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }
}

async fn forward(State(p): State<DynamoProxy>, headers: HeaderMap, body: Bytes) -> Response {
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split('.').next_back())
        .unwrap_or("?")
        .to_owned();
    *p.counts.lock().unwrap().entry(op).or_default() += 1;
    let mut req = p.http.post(&p.target).body(body);
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let ct = resp.headers().get("content-type").cloned();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut out = (status, bytes).into_response();
            if let Some(ct) = ct {
                out.headers_mut().insert("content-type", ct);
            }
            out
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

// ---------------------------------------------------------------------------
// Processes.

struct Env {
    vars: Vec<(String, String)>,
}

fn spawn_function(bin: &FsPath, runtime_addr: &str, env: &Env) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime_addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", bin.file_name().unwrap())
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in &env.vars {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start the function binary")
}

fn deflated_size(path: &FsPath) -> u64 {
    let data = std::fs::read(path).unwrap();
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&data).unwrap();
    enc.finish().unwrap().len() as u64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

// ---------------------------------------------------------------------------

struct Function {
    /// The row's name.
    name: &'static str,
    /// The binary in BENCH_BIN_DIR.
    bin: &'static str,
    event: String,
    /// The HTTP status every invocation must answer.
    status: u16,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let out_json = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "benchmarks/latest.json".into()),
    );
    let warm: usize = args.next().map(|n| n.parse().unwrap()).unwrap_or(2000);
    let cold_starts = 10;
    let ddb = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("run through scripts/bench.sh");
    let bin_dir =
        PathBuf::from(std::env::var("BENCH_BIN_DIR").unwrap_or_else(|_| "target/release".into()));

    let (proxy, proxy_url) = DynamoProxy::start(ddb.clone()).await;
    let runpod = LocalRunPod::new(Settings {
        api_key: Some("bench-key".into()),
        execution_time: Duration::ZERO,
        ..Settings::default()
    });
    let runpod_url = runpod.clone().spawn().await;

    let client = aws_sdk_dynamodb::Client::new(&chat_shared::app::load_aws_config().await);
    let table = format!("bench-{}", uuid::Uuid::new_v4());
    TableDefinition::from_template()
        .unwrap()
        .create(&client, &table)
        .await
        .unwrap();
    let config = chat_shared::config::Config::from_lookup(|k| match k {
        "TABLE_NAME" => Some(table.clone()),
        "JWT_SECRET" => Some(DEV_JWT_SECRET.into()),
        _ => None,
    })
    .unwrap();
    let app = App::new(config, client);

    eprintln!("seeding...");
    let send_conv = seed_messages(&app, "bench-send", 10).await;
    seed_conversations(&app, "bench-list-10", 10).await;
    let get_conv = seed_messages(&app, "bench-get-10", 10).await;

    // The functions' log level, as deployed (info) unless BENCH_RUST_LOG says otherwise.
    let rust_log = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into());
    let env = Env {
        vars: [
            ("TABLE_NAME", table.as_str()),
            ("JWT_SECRET", DEV_JWT_SECRET),
            ("RUNPOD_API_KEY", "bench-key"),
            ("RUNPOD_ENDPOINT_ID", "bench"),
            ("RUNPOD_BASE_URL", runpod_url.as_str()),
            ("RUNPOD_POLL_INITIAL_MS", "5"),
            ("AWS_ENDPOINT_URL_DYNAMODB", proxy_url.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("RUST_LOG", rust_log.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    let token = |u: &str| issue_token(DEV_JWT_SECRET, u, 3600, None, None);
    let send = |body: Value| {
        Event::send(&body.to_string(), Some(token("bench-send")))
            .to_json()
            .to_string()
    };
    let list = |token: &str| Event::list(Some(token.to_owned())).to_json().to_string();
    let get = |id: ConversationId, token: String| {
        Event::get(&id.to_string(), Some(token))
            .to_json()
            .to_string()
    };
    let functions = [
        Function {
            name: "send-message",
            bin: "send-message",
            event: send(json!({
                "message": "How do I organize patient files?",
                "conversation_id": send_conv.to_string(),
            })),
            status: 200,
        },
        Function {
            name: "send-message (new conversation)",
            bin: "send-message",
            event: send(json!({"message": "How do I organize patient files?"})),
            status: 200,
        },
        Function {
            name: "list-conversations",
            bin: "list-conversations",
            event: list(&token("bench-list-10")),
            status: 200,
        },
        Function {
            name: "get-conversation",
            bin: "get-conversation",
            event: get(get_conv, token("bench-get-10")),
            status: 200,
        },
        Function {
            // No I/O: the runtime loop, event parsing and the 401 alone.
            name: "list-conversations (bad token: 401, no I/O)",
            bin: "list-conversations",
            event: list("not-a-token"),
            status: 401,
        },
    ];

    // BENCH_FUNCTIONS=send-message,... measures only those (and no sweeps
    // unless their function is among them): for profiling one binary.
    let only: Option<Vec<String>> = std::env::var("BENCH_FUNCTIONS")
        .ok()
        .map(|v| v.split(',').map(|f| f.trim().to_owned()).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|f| f == name));

    let mut results = serde_json::Map::new();
    for f in functions.iter().filter(|f| wanted(f.bin)) {
        let bin = bin_dir.join(f.bin);
        eprintln!("{}: cold starts", f.name);
        let (mut inits, mut firsts) = (Vec::new(), Vec::new());
        for _ in 0..cold_starts {
            let (rt, addr) = Runtime::start().await;
            let started = Instant::now();
            let mut child = spawn_function(&bin, &addr, &env);
            let (status, body) = rt.invoke(&f.event).await;
            assert_eq!(
                status,
                f.status,
                "{}: {}",
                f.name,
                String::from_utf8_lossy(&body)
            );
            let init = rt.first_next().unwrap() - started;
            inits.push(init);
            // The first invocation pays for what init deferred (connections, TLS roots).
            firsts.push(started.elapsed() - init);
            child.kill().await.ok();
        }
        inits.sort();
        firsts.sort();

        eprintln!("{}: {warm} warm invocations", f.name);
        let (rt, addr) = Runtime::start().await;
        let mut child = spawn_function(&bin, &addr, &env);
        let pid = child.id().unwrap();
        for _ in 0..20 {
            rt.invoke(&f.event).await;
        }
        // One turn's calls, counted at the proxy and the RunPod stand-in.
        let (ddb_before, rp_before) = (
            proxy.snapshot(),
            (runpod.submitted(), runpod.status_calls()),
        );
        let (status, _) = rt.invoke(&f.event).await;
        assert_eq!(status, f.status);
        let ddb_calls = diff(&proxy.snapshot(), &ddb_before);
        let rp_calls = (runpod.submitted() - rp_before.0) + (runpod.status_calls() - rp_before.1);

        let cpu_before = cpu_time(pid);
        let scheduled_before = scheduled_time(pid);
        let mut lat = Vec::with_capacity(warm);
        for _ in 0..warm {
            let t = Instant::now();
            let (status, _) = rt.invoke(&f.event).await;
            lat.push(t.elapsed());
            assert_eq!(status, f.status);
        }
        let scheduled = (scheduled_time(pid) - scheduled_before) / warm as u32;
        let cpu_after = cpu_time(pid);
        let user_cpu = (cpu_after.0 - cpu_before.0) / warm as u32;
        let system_cpu = (cpu_after.1 - cpu_before.1) / warm as u32;
        let rss = peak_rss_kb(pid);
        child.kill().await.ok();
        lat.sort();
        let size = std::fs::metadata(&bin).unwrap().len();
        results.insert(
            f.name.to_owned(),
            json!({
                "init_ms_median": ms(inits[inits.len() / 2]),
                "init_ms_max": ms(*inits.last().unwrap()),
                "first_invocation_ms_median": ms(firsts[firsts.len() / 2]),
                "warm_ms_p50": ms(percentile(&lat, 0.5)),
                "warm_ms_p99": ms(percentile(&lat, 0.99)),
                "cpu_us_per_invocation": us(scheduled),
                "user_cpu_us_per_invocation": us(user_cpu),
                "system_cpu_us_per_invocation": us(system_cpu),
                "peak_rss_mb": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
                "binary_mb": (size as f64 / 1e6 * 100.0).round() / 100.0,
                "deflated_mb": (deflated_size(&bin) as f64 / 1e6 * 100.0).round() / 100.0,
                "dynamodb_calls_per_invocation": ddb_calls,
                "runpod_calls_per_invocation": rp_calls,
            }),
        );
    }

    // Size sweeps: a page must cost the same whatever lies beyond it.
    let mut sweeps = serde_json::Map::new();
    for (label, function) in [
        ("get-conversation", "messages"),
        ("list-conversations", "conversations"),
    ]
    .into_iter()
    .filter(|(label, _)| wanted(label))
    {
        let mut points = serde_json::Map::new();
        for n in [10usize, 1_000, 10_000] {
            eprintln!("{label}: {n} {function}");
            let user = format!("sweep-{label}-{n}");
            let ev = if label == "get-conversation" {
                let id = seed_messages(&app, &user, n).await;
                get(id, token(&user))
            } else {
                seed_conversations(&app, &user, n).await;
                list(&token(&user))
            };
            let (rt, addr) = Runtime::start().await;
            let mut child = spawn_function(&bin_dir.join(label), &addr, &env);
            for _ in 0..20 {
                rt.invoke(&ev).await;
            }
            const RUNS: u32 = 300;
            let pid = child.id().unwrap();
            let (scheduled_before, ddb_before) = (scheduled_time(pid), proxy.snapshot());
            let mut lat: Vec<Duration> = Vec::new();
            for _ in 0..RUNS {
                let t = Instant::now();
                let (status, _) = rt.invoke(&ev).await;
                assert_eq!(status, 200);
                lat.push(t.elapsed());
            }
            let cpu = (scheduled_time(pid) - scheduled_before) / RUNS;
            let ddb_calls: u64 = diff(&proxy.snapshot(), &ddb_before).values().sum();
            child.kill().await.ok();
            lat.sort();
            points.insert(
                n.to_string(),
                json!({
                    "p50_ms": ms(percentile(&lat, 0.5)),
                    "p99_ms": ms(percentile(&lat, 0.99)),
                    "cpu_us_per_invocation": us(cpu),
                    "dynamodb_calls_per_invocation": ddb_calls as f64 / RUNS as f64,
                }),
            );
        }
        sweeps.insert(
            format!("{label} ({function}; default page)"),
            Value::Object(points),
        );
    }

    // Client CPU per outside call, in process (bench-calls, release build).
    let calls = if wanted("send-message") {
        eprintln!("client CPU per call (bench-calls)");
        // In BENCH_BIN_DIR when built there, else the release build's.
        let calls_bin = Some(bin_dir.join("bench-calls"))
            .filter(|b| b.exists())
            .unwrap_or_else(|| PathBuf::from("target/release/bench-calls"));
        let out = tokio::process::Command::new(calls_bin)
            .arg(warm.to_string())
            .env_clear()
            .envs(env.vars.iter().map(|(k, v)| (k, v)))
            // DynamoDB Local directly: the proxy would add to the wall times only.
            .env("AWS_ENDPOINT_URL_DYNAMODB", &ddb)
            .stderr(Stdio::inherit())
            .output()
            .await
            .expect("run bench-calls (scripts/bench.sh builds it)");
        assert!(out.status.success(), "bench-calls failed");
        serde_json::from_slice(&out.stdout).expect("bench-calls prints JSON")
    } else {
        Value::Null
    };

    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let report = json!({
        "machine": {"cpu": cpu_model, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "warm_invocations": warm,
        "cold_starts": cold_starts,
        "functions": results,
        "sweeps": sweeps,
        "calls": calls,
    });
    if let Some(dir) = out_json.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&out_json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    print_table(&report);
    eprintln!("written to {}", out_json.display());
}

fn print_table(r: &Value) {
    println!(
        "machine: {} ({} cores)",
        r["machine"]["cpu"].as_str().unwrap_or(""),
        r["machine"]["cores"]
    );
    println!();
    println!("| function | init median / max (ms) | first invocation (ms) | warm p50 / p99 (ms) | CPU per invocation (µs): scheduled; user + system ticks | peak RSS (MB) | binary / deflated (MB) | DynamoDB calls | RunPod calls |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, f) in r["functions"].as_object().unwrap() {
        println!(
            "| {name} | {} / {} | {} | {} / {} | {}; {} + {} | {} | {} / {} | {} | {} |",
            f["init_ms_median"],
            f["init_ms_max"],
            f["first_invocation_ms_median"],
            f["warm_ms_p50"],
            f["warm_ms_p99"],
            f["cpu_us_per_invocation"],
            f["user_cpu_us_per_invocation"],
            f["system_cpu_us_per_invocation"],
            f["peak_rss_mb"],
            f["binary_mb"],
            f["deflated_mb"],
            f["dynamodb_calls_per_invocation"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect::<Vec<_>>()
                .join(", "),
            f["runpod_calls_per_invocation"],
        );
    }
    let sweeps = r["sweeps"].as_object().unwrap();
    if !sweeps.is_empty() {
        println!();
        println!("| sweep | 10 | 1 000 | 10 000 |");
        println!("|---|---|---|---|");
    }
    for (name, points) in sweeps {
        let cell = |n: &str| {
            let p = &points[n];
            format!(
                "{} / {} ms, {} µs CPU, {} DynamoDB call(s)",
                p["p50_ms"],
                p["p99_ms"],
                p["cpu_us_per_invocation"],
                p["dynamodb_calls_per_invocation"]
            )
        };
        println!(
            "| {name}: p50 / p99, CPU, calls | {} | {} | {} |",
            cell("10"),
            cell("1000"),
            cell("10000")
        );
    }
    let Some(rows) = r["calls"]["rows"].as_array() else {
        return;
    };
    println!();
    println!(
        "| client CPU per call, in process ({} calls each) | CPU (µs) | user + system ticks (µs) | wall (µs) |",
        r["calls"]["calls_per_row"]
    );
    println!("|---|---|---|---|");
    for c in rows {
        println!(
            "| {} | {} | {} + {} | {} |",
            c["call"].as_str().unwrap_or(""),
            c["cpu_us"],
            c["user_us"],
            c["system_us"],
            c["wall_us"]
        );
    }
    // Every invocation is also two Runtime API exchanges (next, response).
    let bare = rows[0]["cpu_us"].as_f64().unwrap_or(0.0);
    for (name, f) in r["functions"].as_object().unwrap() {
        let Some(ddb) = f["dynamodb_calls_per_invocation"].as_object() else {
            continue;
        };
        let exchanges = 2
            + ddb.values().filter_map(Value::as_u64).sum::<u64>()
            + f["runpod_calls_per_invocation"].as_u64().unwrap_or(0);
        println!(
            "{name}: {exchanges} HTTP exchanges per invocation, at least {:.0} µs of CPU at {bare} µs each",
            exchanges as f64 * bare
        );
    }
}
