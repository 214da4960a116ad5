//! A proxy in front of DynamoDB Local that counts calls by operation, so
//! the benchmark can say which calls each request makes.

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

/// The running proxy.
#[derive(Clone)]
pub struct DynamoProxy {
    target: String,
    http: reqwest::Client,
    counts: Arc<Mutex<Counts>>,
}

impl DynamoProxy {
    /// Forwards to `target` from a free loopback port; the proxy and its URL.
    pub async fn start(target: String) -> (Self, String) {
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
        };
        *proxy.counts.lock().unwrap() = Counts::from([("Query".into(), 3), ("GetItem".into(), 1)]);
        let before = proxy.snapshot();
        proxy.counts.lock().unwrap().insert("Query".into(), 5);
        proxy.counts.lock().unwrap().insert("PutItem".into(), 1);
        let expected = Counts::from([("PutItem".into(), 1), ("Query".into(), 2)]);
        assert_eq!(proxy.since(&before), expected);
    }
}
