//! A proxy in front of DynamoDB Local that counts calls by operation, so
//! the benchmark can say which calls each request makes, and that can hold
//! calls unanswered, so tests can stall DynamoDB.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
    Router,
};

/// Calls so far, by operation (`Query`, `TransactWriteItems`, ...).
pub type Counts = BTreeMap<String, u64>;

/// Calls of one operation to leave unanswered: after `skip` more of them
/// pass, the next `count` are held until their caller gives up.
#[derive(Debug, Clone)]
pub struct Hold {
    /// The operation (`TransactWriteItems`, ...), or `*` for every one.
    pub op: String,
    /// How many calls still pass before the holding starts.
    pub skip: usize,
    /// How many calls are held.
    pub count: usize,
}

/// The running proxy.
#[derive(Clone)]
pub struct DynamoProxy {
    target: String,
    http: reqwest::Client,
    counts: Arc<Mutex<Counts>>,
    hold: Arc<Mutex<Option<Hold>>>,
}

impl DynamoProxy {
    /// Forwards to `target` from a free loopback port; the proxy and its URL.
    pub async fn start(target: String) -> (Self, String) {
        let proxy = DynamoProxy {
            target,
            http: reqwest::Client::new(),
            counts: Arc::default(),
            hold: Arc::default(),
        };
        let app = Router::new()
            .route("/", any(forward))
            .with_state(proxy.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (proxy, url)
    }

    /// From now on, holds calls as `hold` says (`None`: answers all).
    pub fn hold(&self, hold: Option<Hold>) {
        *self.hold.lock().unwrap() = hold;
    }

    /// Whether this call of `op` is one to hold (and counts it if so).
    fn holds(&self, op: &str) -> bool {
        let mut hold = self.hold.lock().unwrap();
        let Some(h) = hold.as_mut().filter(|h| h.op == "*" || h.op == op) else {
            return false;
        };
        if h.skip > 0 {
            h.skip -= 1;
            return false;
        }
        let held = h.count > 0;
        h.count = h.count.saturating_sub(1);
        held
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    /// The calls made since `before` was taken.
    pub fn since(&self, before: &Counts) -> Counts {
        let mut counts = self.snapshot();
        counts.retain(|op, n| {
            *n -= before.get(op).copied().unwrap_or(0);
            *n > 0
        });
        counts
    }
}

async fn forward(State(p): State<DynamoProxy>, headers: HeaderMap, body: Bytes) -> Response {
    let op = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split('.').next_back())
        .unwrap_or("?")
        .to_owned();
    if p.holds(&op) {
        // Never answered: the caller's timeout ends it (and drops this).
        std::future::pending::<()>().await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_keeps_the_operations_called_after_the_snapshot() {
        let proxy = DynamoProxy {
            target: String::new(),
            http: reqwest::Client::new(),
            counts: Arc::default(),
            hold: Arc::default(),
        };
        *proxy.counts.lock().unwrap() = Counts::from([("Query".into(), 3), ("GetItem".into(), 1)]);
        let before = proxy.snapshot();
        proxy.counts.lock().unwrap().insert("Query".into(), 5);
        proxy.counts.lock().unwrap().insert("PutItem".into(), 1);
        let expected = Counts::from([("PutItem".into(), 1), ("Query".into(), 2)]);
        assert_eq!(proxy.since(&before), expected);
    }

    #[test]
    fn a_hold_skips_then_holds_its_count_of_its_operation() {
        let proxy = DynamoProxy {
            target: String::new(),
            http: reqwest::Client::new(),
            counts: Arc::default(),
            hold: Arc::default(),
        };
        proxy.hold(Some(Hold {
            op: "TransactWriteItems".into(),
            skip: 1,
            count: 2,
        }));
        let held: Vec<bool> = ["TransactWriteItems", "Query", "TransactWriteItems"]
            .into_iter()
            .chain(["TransactWriteItems", "TransactWriteItems"])
            .map(|op| proxy.holds(op))
            .collect();
        assert_eq!(held, [false, false, true, true, false]);
    }
}
