//! The benchmark: runs each function's release binary the way Lambda does,
//! under a minimal Lambda Runtime API of its own, against DynamoDB Local
//! (through a proxy that counts calls) and the local RunPod endpoint
//! answering at once. Prints a table and writes it as JSON.
//!
//! Run with `scripts/bench.sh` (it builds the release binaries and starts
//! DynamoDB Local). Arguments: `[OUT_JSON] [WARM_INVOCATIONS]`.
//! `BENCH_FUNCTIONS=send-message,...` measures only those binaries (and
//! their sweeps); `BENCH_BIN_DIR` (target/release) says where they are;
//! `BENCH_RUST_LOG` (info) is their log level; `BENCH_FN_<NAME>=<value>`
//! adds `<NAME>` to their environment; `BENCH_LAGS_ONLY=1` measures only
//! the reply lags (issue 28), `BENCH_LAG_TURNS` (30) turns per job length
//! (0: none); `BENCH_NO_CLIENT_CALLS=1` skips `bench-calls`.

use std::{path::PathBuf, time::Duration};

use chat_service_dev::{
    apigw::Event,
    bench::{proxy::DynamoProxy, report, Bench, Function},
    runpod_local::{LocalRunPod, Settings},
    seed::{seed_conversations, seed_messages, seed_versions},
    table::TableDefinition,
    DEV_JWT_SECRET, DEV_SIGNING_SECRET,
};
use chat_shared::{auth::issue_token, domain::ConversationId, App};
use serde_json::{json, Value};

fn token(user: &str) -> String {
    issue_token(DEV_JWT_SECRET, user, 3600, None, None)
}

fn send_event(body: Value) -> String {
    let event = Event::send(&body.to_string(), Some(token("bench-send")));
    event.to_json().to_string()
}

fn stream_event(body: Value) -> String {
    let event = Event::send_stream(&body.to_string(), Some(token("bench-send")));
    event.to_json().to_string()
}

fn keyed_send_event(body: Value) -> String {
    let event = Event::send(&body.to_string(), Some(token("bench-send")));
    let keyed = event.header("Idempotency-Key", "bench-retry");
    keyed.to_json().to_string()
}

fn list_event(token: &str) -> String {
    Event::list(Some(token.to_owned())).to_json().to_string()
}

fn get_event(id: ConversationId, user: &str) -> String {
    let event = Event::get(&id.to_string(), Some(token(user)));
    event.to_json().to_string()
}

/// A fresh table from `template.yaml` and the service's app over it.
async fn app_with_table() -> (App, String) {
    let client = aws_sdk_dynamodb::Client::new(&chat_shared::app::load_aws_config().await);
    let table = format!("bench-{}", uuid::Uuid::new_v4());
    let definition = TableDefinition::from_template().unwrap();
    definition.create(&client, &table).await.unwrap();
    let config = chat_shared::config::Config::from_lookup(|k| match k {
        "TABLE_NAME" => Some(table.clone()),
        "JWT_SECRET" => Some(DEV_JWT_SECRET.into()),
        "SIGNING_SECRET" => Some(DEV_SIGNING_SECRET.into()),
        _ => None,
    })
    .unwrap();
    (App::new(config, client), table)
}

/// The functions' environment, as deployed but pointed at the local stand-ins
/// (a webhook, as the template always sets, whose deliveries are dropped).
fn function_env(
    table: &str,
    runpod_url: &str,
    dynamodb_url: &str,
    webhooks: &str,
) -> Vec<(String, String)> {
    // The functions' log level, as deployed (info) unless BENCH_RUST_LOG says otherwise.
    let rust_log = std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into());
    [
        ("TABLE_NAME", table),
        ("JWT_SECRET", DEV_JWT_SECRET),
        ("SIGNING_SECRET", DEV_SIGNING_SECRET),
        ("RUNPOD_API_KEY", "bench-key"),
        ("RUNPOD_ENDPOINT_ID", "bench"),
        ("RUNPOD_BASE_URL", runpod_url),
        ("RUNPOD_POLL_INITIAL_MS", "5"),
        ("WEBHOOK_BASE_URL", webhooks),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_url),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RUST_LOG", rust_log.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    // BENCH_FN_<NAME>=<value> sets <NAME> for the functions too (the
    // secrets' ARNs and a local Secrets Manager, say).
    .chain(std::env::vars().filter_map(|(k, v)| Some((k.strip_prefix("BENCH_FN_")?.to_owned(), v))))
    .collect()
}

/// The table's rows, over conversations seeded for them.
async fn functions(app: &App) -> Vec<Function> {
    eprintln!("seeding...");
    let send_conv = seed_messages(app, "bench-send", 10).await;
    seed_conversations(app, "bench-list-10", 10).await;
    let get_conv = seed_messages(app, "bench-get-10", 10).await;
    let after_reply = after_reply_rows(app).await;
    let mut rows = send_rows(send_conv);
    rows.extend([
        row(
            "list-conversations",
            "list-conversations",
            list_event(&token("bench-list-10")),
            200,
        ),
        row(
            "get-conversation",
            "get-conversation",
            get_event(get_conv, "bench-get-10"),
            200,
        ),
    ]);
    rows.extend(after_reply);
    rows.extend([
        // The catalogue from the configuration: no DynamoDB, no RunPod.
        row(
            "list-models",
            "list-models",
            Event::models(Some(token("bench-list-10")))
                .to_json()
                .to_string(),
            200,
        ),
        // No I/O: the runtime loop, event parsing and the 401 alone.
        row(
            "list-conversations (bad token: 401, no I/O)",
            "list-conversations",
            list_event("not-a-token"),
            401,
        ),
    ]);
    rows
}

fn row(name: &'static str, bin: &'static str, event: String, status: u16) -> Function {
    Function {
        name,
        bin,
        event,
        status,
    }
}

/// Issue 29's rows, over a seeded conversation of 10 messages: a reply's
/// rating (each invocation replaces it), the conversation's export, and
/// the public read of a link to it.
async fn after_reply_rows(app: &App) -> Vec<Function> {
    use chat_shared::store::{prelude::*, PageRequest};
    let user = "bench-after-reply";
    let id = seed_messages(app, user, 10).await;
    let owner = chat_shared::domain::UserId::parse(user).unwrap();
    let newest = PageRequest {
        limit: 1,
        cursor: None,
    };
    let (_, page) = app
        .chat
        .store()
        .conversation_page(&owner, id, &newest)
        .await
        .unwrap();
    let reply = page.items[0].id.to_string();
    let share = app.chat.share(&owner, id).await.unwrap();
    let id = id.to_string();
    let rate = Event::feedback(&id, &reply, Some(r#"{"rating": "up"}"#), Some(token(user)));
    vec![
        row(
            "message-feedback (PUT)",
            "message-feedback",
            rate.to_json().to_string(),
            200,
        ),
        row(
            "export-conversation (json, 10 messages)",
            "export-conversation",
            Event::export(&id, Some(token(user))).to_json().to_string(),
            200,
        ),
        row(
            "read-share (public, 10 messages)",
            "read-share",
            Event::read_share(share.id.as_str()).to_json().to_string(),
            200,
        ),
    ]
}

/// The rows that start a reply: to a seeded conversation, a new one, a
/// replayed key, a stream.
fn send_rows(send_conv: ConversationId) -> Vec<Function> {
    let text = "How do I organize patient files?";
    vec![
        row(
            "send-message",
            "send-message",
            send_event(json!({"message": text, "conversation_id": send_conv.to_string()})),
            200,
        ),
        row(
            "send-message (new conversation)",
            "send-message",
            send_event(json!({ "message": text })),
            200,
        ),
        // One key for every invocation: the first runs, every later one is
        // the retry a client makes, answered from the key's record.
        row(
            "send-message (Idempotency-Key retried: replay)",
            "send-message",
            keyed_send_event(json!({ "message": text })),
            200,
        ),
        // The local endpoint writes the development reply in 16 chunks.
        row(
            "stream-message (new conversation, 16 chunks)",
            "stream-message",
            stream_event(json!({ "message": text })),
            200,
        ),
    ]
}

/// The branch sweep (issue 26): the default page of a conversation of 10,
/// 1 000 and 10 000 messages whose last reply has 1, 10 and 100 versions
/// (each regenerate leaves one more off the active path, and one more id
/// on its question's item), so a page must cost the same whatever lies
/// beyond it or beside it.
async fn branch_sweep(bench: &Bench, app: &App) -> Vec<(String, Value)> {
    const BRANCHES: [usize; 3] = [1, 10, 100];
    let mut rows = vec![serde_json::Map::new(); BRANCHES.len()];
    for n in [10usize, 1_000, 10_000] {
        let user = format!("sweep-branches-{n}");
        let id = seed_messages(app, &user, n).await;
        let mut versions = 1;
        for (row, b) in rows.iter_mut().zip(BRANCHES) {
            eprintln!("get-conversation: {n} messages, {b} versions of the last reply");
            seed_versions(app, &user, id, b - versions).await;
            versions = b;
            let point = bench
                .sweep_point("get-conversation", &get_event(id, &user))
                .await;
            row.insert(n.to_string(), point);
        }
    }
    BRANCHES
        .iter()
        .zip(rows)
        .map(|(b, points)| {
            let name = format!("get-conversation (messages; last reply in {b} version(s))");
            (name, Value::Object(points))
        })
        .collect()
}

/// Size sweeps: a page must cost the same whatever lies beyond it.
async fn sweep(bench: &Bench, app: &App, bin: &str) -> (String, Value) {
    let items = if bin == "get-conversation" {
        "messages"
    } else {
        "conversations"
    };
    let mut points = serde_json::Map::new();
    for n in [10usize, 1_000, 10_000] {
        eprintln!("{bin}: {n} {items}");
        let user = format!("sweep-{bin}-{n}");
        let event = if bin == "get-conversation" {
            get_event(seed_messages(app, &user, n).await, &user)
        } else {
            seed_conversations(app, &user, n).await;
            list_event(&token(&user))
        };
        points.insert(n.to_string(), bench.sweep_point(bin, &event).await);
    }
    let name = format!("{bin} ({items}; default page)");
    (name, Value::Object(points))
}

/// Chunk-to-client delays against an endpoint that writes the 16 chunks
/// 87.5 ms apart (1.4 s of execution).
async fn stream_delays(bench: &Bench) -> Value {
    eprintln!("stream-message: delay from a chunk at RunPod to its delta");
    let slow = LocalRunPod::new(Settings {
        api_key: Some("bench-key".into()),
        execution_time: Duration::from_millis(1_400),
        ..Settings::default()
    });
    let url = slow.clone().spawn().await;
    let event = stream_event(json!({ "message": "How do I organize patient files?" }));
    let mut report = bench
        .stream_delays("stream-message", &event, &slow, &url, 20)
        .await;
    eprintln!("stream-message: DynamoDB calls of a reply written over 1.4 s");
    report["dynamodb_calls_per_slow_reply"] = bench
        .calls_of_a_slow_stream("stream-message", &event, &url)
        .await;
    if bench.has("attach-stream") {
        eprintln!("attach-stream: time to the first event");
        let continuing = |id: Option<&str>| match id {
            Some(id) => stream_event(json!({ "conversation_id": id, "message": "And then?" })),
            None => stream_event(json!({ "message": "How do I organize patient files?" })),
        };
        let attach = |id: &str, last: Option<u64>| {
            let mut event = Event::attach(id, Some(token("bench-send")));
            if let Some(n) = last {
                event = event.header("Last-Event-ID", &n.to_string());
            }
            event.to_json().to_string()
        };
        report["attach"] = bench
            .attach_delays("stream-message", &continuing, &attach, &url, 20)
            .await;
    }
    report
}

/// Issue 29: the export of every conversation (`export-all`), for users
/// with 100 and 1 000 conversations of 50 messages: its time, size, calls
/// and the function's peak memory, which must not grow with the count.
async fn export_all(bench: &Bench, app: &App) -> Value {
    use futures::StreamExt;
    let mut points = serde_json::Map::new();
    for n in [100usize, 1_000] {
        let user = format!("bench-export-{n}");
        eprintln!("export-all: seeding {n} conversations of 50 messages");
        futures::stream::iter(0..n)
            .map(|_| seed_messages(app, &user, 50))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        eprintln!("export-all: {n} conversations");
        let event = Event::export_all(Some(token(&user))).to_json().to_string();
        // The function's Timeout in template.yaml.
        let timeout = Duration::from_secs(900);
        let point = bench.long_stream("export-all", &event, timeout, 3).await;
        assert_eq!(point["end"]["end"], "complete", "{point}");
        assert_eq!(point["end"]["conversations"], n, "{point}");
        points.insert(n.to_string(), point);
    }
    Value::Object(points)
}

/// Issue 28: the lag from a job's end at RunPod to the reply at the
/// client, after jobs of 0.5, 2, 8 and 20 s, for the send and the streamed
/// send (`BENCH_LAG_TURNS` turns per duration, 30 unless set).
async fn reply_lags(bench: &Bench, wanted: &dyn Fn(&str) -> bool) -> Value {
    let turns: usize = std::env::var("BENCH_LAG_TURNS").map_or(30, |n| n.parse().unwrap());
    let durations = [500, 2_000, 8_000, 20_000].map(Duration::from_millis);
    // Ten instances at once, as ten users' turns.
    let (processes, per) = (10, turns.div_ceil(10));
    let text = "How do I organize patient files?";
    let mut lags = serde_json::Map::new();
    for (bin, event) in [
        ("send-message", send_event(json!({ "message": text }))),
        ("stream-message", stream_event(json!({ "message": text }))),
    ] {
        if wanted(bin) {
            let rows = bench
                .reply_lags(bin, &event, &durations, processes, per)
                .await;
            lags.insert(bin.to_owned(), rows);
        }
    }
    Value::Object(lags)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let out_json = PathBuf::from(args.next().unwrap_or("benchmarks/latest.json".into()));
    let warm: usize = args.next().map_or(2000, |n| n.parse().unwrap());
    let ddb = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("run through scripts/bench.sh");
    let only: Option<Vec<String>> = std::env::var("BENCH_FUNCTIONS")
        .ok()
        .map(|v| v.split(',').map(|f| f.trim().to_owned()).collect());
    let wanted = |bin: &str| only.as_ref().is_none_or(|o| o.iter().any(|f| f == bin));

    let (proxy, proxy_url) = DynamoProxy::start(ddb.clone()).await;
    let runpod = LocalRunPod::new(Settings {
        api_key: Some("bench-key".into()),
        execution_time: Duration::ZERO,
        ..Settings::default()
    });
    let runpod_url = runpod.clone().spawn().await;
    let (app, table) = app_with_table().await;
    let webhooks = format!(
        "{}/api/chat/runpod/webhook",
        chat_service_dev::bench::webhook_sink().await
    );
    let bench = Bench {
        bin_dir: std::env::var("BENCH_BIN_DIR")
            .unwrap_or("target/release".into())
            .into(),
        env: function_env(&table, &runpod_url, &proxy_url, &webhooks),
        proxy,
        runpod,
        warm,
        cold_starts: 10,
    };

    let report = measure(&bench, &app, &wanted, &ddb).await;
    if let Some(dir) = out_json.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&out_json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    report::print(&report);
    eprintln!("written to {}", out_json.display());
}

/// Every row, sweep and measurement `wanted` selects, as the report.
async fn measure(bench: &Bench, app: &App, wanted: &dyn Fn(&str) -> bool, ddb: &str) -> Value {
    if std::env::var_os("BENCH_LAGS_ONLY").is_some() {
        return json!({
            "machine": chat_service_dev::bench::machine(),
            "lags": reply_lags(bench, wanted).await,
        });
    }
    let mut results = serde_json::Map::new();
    for f in functions(app).await.iter().filter(|f| wanted(f.bin)) {
        results.insert(f.name.to_owned(), bench.row(f).await);
    }
    let mut sweeps = serde_json::Map::new();
    for bin in ["get-conversation", "list-conversations"] {
        if wanted(bin) {
            let (name, points) = sweep(bench, app, bin).await;
            sweeps.insert(name, points);
        }
    }
    if wanted("get-conversation") {
        sweeps.extend(branch_sweep(bench, app).await);
    }
    let stream = match wanted("stream-message") {
        true => stream_delays(bench).await,
        false => Value::Null,
    };
    let export = match wanted("export-all") {
        true => export_all(bench, app).await,
        false => Value::Null,
    };
    let lags = match std::env::var("BENCH_LAG_TURNS").as_deref() {
        Ok("0") => Value::Null,
        _ => reply_lags(bench, wanted).await,
    };
    let calls = match wanted("send-message") && std::env::var_os("BENCH_NO_CLIENT_CALLS").is_none()
    {
        true => bench.client_calls(ddb).await,
        false => Value::Null,
    };

    json!({
        "machine": chat_service_dev::bench::machine(),
        "warm_invocations": bench.warm,
        "cold_starts": bench.cold_starts,
        "functions": results,
        "sweeps": sweeps,
        "calls": calls,
        "stream": stream,
        "export_all": export,
        "lags": lags,
    })
}
