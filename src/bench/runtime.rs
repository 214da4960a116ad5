//! A minimal Lambda Runtime API, one per function process: it hands the
//! function one queued event per `next` and returns what the function posts.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use serde_json::Value;
use tokio::sync::{oneshot, Notify};

/// The deadline every invocation gets, as a 28 s Lambda would, unless
/// [`Runtime::set_invocation_time`] says otherwise.
const INVOCATION_TIME: Duration = Duration::from_secs(28);

#[derive(Default)]
struct RuntimeState {
    queue: Mutex<VecDeque<(String, String)>>,
    queued: Notify,
    waiting: Mutex<HashMap<String, oneshot::Sender<(u16, Bytes)>>>,
    first_next: Mutex<Option<Instant>>,
    /// The last streamed response's body pieces, as they arrived.
    arrivals: Mutex<Vec<(Instant, Bytes)>>,
    /// The function's timeout, when not [`INVOCATION_TIME`].
    invocation_time: Mutex<Option<Duration>>,
}

/// One function's Runtime API.
#[derive(Clone)]
pub struct Runtime(Arc<RuntimeState>);

impl Runtime {
    /// Serves on a free loopback port; the runtime and its `host:port`.
    pub async fn start() -> (Self, String) {
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
    pub async fn invoke(&self, event: &str) -> (u16, Bytes) {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.0.waiting.lock().unwrap().insert(id.clone(), tx);
        let queued = (id, event.to_owned());
        self.0.queue.lock().unwrap().push_back(queued);
        self.0.queued.notify_one();
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the function did not answer within 60 s")
            .expect("runtime dropped the invocation")
    }

    /// The last streamed response's body pieces (after the prelude), with
    /// when each arrived.
    pub fn arrivals(&self) -> Vec<(Instant, Bytes)> {
        self.0.arrivals.lock().unwrap().clone()
    }

    /// Later invocations get `time` to their deadline (the function's
    /// `Timeout` in template.yaml), not 28 s.
    pub fn set_invocation_time(&self, time: Duration) {
        *self.0.invocation_time.lock().unwrap() = Some(time);
    }

    /// When the function first asked for an event: the end of its init.
    pub fn first_next(&self) -> Option<Instant> {
        *self.0.first_next.lock().unwrap()
    }

    fn complete(&self, id: &str, status: u16, body: Bytes) -> StatusCode {
        if let Some(tx) = self.0.waiting.lock().unwrap().remove(id) {
            let _ = tx.send((status, body));
        }
        StatusCode::ACCEPTED
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
            let time =
                rt.0.invocation_time
                    .lock()
                    .unwrap()
                    .unwrap_or(INVOCATION_TIME);
            return invocation(id, event, time);
        }
        rt.0.queued.notified().await;
    }
}

/// An event with the headers Lambda sends beside it.
fn invocation(id: String, event: String, time: Duration) -> Response {
    let deadline = (SystemTime::now() + time)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:bench";
    let trace = "Root=1-00000000-000000000000000000000000";
    let headers = [
        ("lambda-runtime-aws-request-id", id),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        ("lambda-runtime-invoked-function-arn", arn.to_owned()),
        ("lambda-runtime-trace-id", trace.to_owned()),
        ("content-type", "application/json".to_owned()),
    ];
    (headers, event).into_response()
}

/// A buffered response is the API Gateway response document; a streamed
/// one (`Lambda-Runtime-Function-Response-Mode: streaming`) is a JSON
/// prelude with the status and headers, eight NUL bytes, then the body,
/// whose pieces are timed as they arrive.
async fn response(
    State(rt): State<Runtime>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    let streamed = headers
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|v| v == "streaming");
    let mut pieces = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(Ok(piece)) = futures::StreamExt::next(&mut stream).await {
        pieces.push((Instant::now(), piece));
    }
    let whole: Vec<u8> = pieces.iter().flat_map(|(_, p)| p.to_vec()).collect();
    let (document, rest) = match streamed {
        true => {
            let at = whole
                .windows(8)
                .position(|w| w == [0u8; 8])
                .unwrap_or(whole.len());
            (&whole[..at], whole.get(at + 8..).unwrap_or_default())
        }
        false => (&whole[..], &[][..]),
    };
    // The HTTP status lives inside the API Gateway response document.
    let status = serde_json::from_slice::<Value>(document)
        .ok()
        .and_then(|v| v["statusCode"].as_u64())
        .unwrap_or(0) as u16;
    if streamed {
        *rt.0.arrivals.lock().unwrap() = split_after_prelude(pieces, document.len() + 8);
        return rt.complete(&id, status, Bytes::copy_from_slice(rest));
    }
    rt.complete(&id, status, Bytes::from(whole))
}

/// The pieces with the first `skip` bytes (the prelude) removed.
fn split_after_prelude(pieces: Vec<(Instant, Bytes)>, mut skip: usize) -> Vec<(Instant, Bytes)> {
    let mut out = Vec::new();
    for (at, piece) in pieces {
        if skip >= piece.len() {
            skip -= piece.len();
            continue;
        }
        out.push((at, piece.slice(skip..)));
        skip = 0;
    }
    out
}

async fn error(State(rt): State<Runtime>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    rt.complete(&id, 0, body)
}

async fn init_error(body: Bytes) -> StatusCode {
    eprintln!("function init error: {}", String::from_utf8_lossy(&body));
    StatusCode::ACCEPTED
}
