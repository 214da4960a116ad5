//! API Gateway HTTP API (payload 2.0) events, as API Gateway and `cargo
//! lambda watch` deliver them: the one builder the tests and the benchmark use.

use serde_json::{json, Map, Value};

/// The request id every built event carries (error bodies echo it).
pub const REQUEST_ID: &str = "test-request-id";

/// One request to one route.
#[derive(Debug, Clone)]
pub struct Event {
    method: &'static str,
    path: String,
    route: &'static str,
    path_parameter: Option<(&'static str, String)>,
    /// A second path parameter (`message_id`, `share_id`) beside `id`.
    second_parameter: Option<(&'static str, String)>,
    query: Vec<(String, String)>,
    body: Option<String>,
    /// The body is base64 (`isBase64Encoded`), as API Gateway sends bytes.
    base64: bool,
    token: Option<String>,
    /// More headers, lower-case names.
    headers: Vec<(String, String)>,
}

impl Event {
    fn new(method: &'static str, route: &'static str, path: String, token: Option<String>) -> Self {
        Self {
            method,
            path,
            route,
            path_parameter: None,
            second_parameter: None,
            query: vec![],
            body: None,
            base64: false,
            token,
            headers: vec![],
        }
    }

    fn on_conversation(
        method: &'static str,
        route: &'static str,
        id: &str,
        token: Option<String>,
    ) -> Self {
        let mut e = Self::new(
            method,
            route,
            format!("/api/chat/conversations/{id}"),
            token,
        );
        e.path_parameter = Some(("id", id.to_owned()));
        e
    }

    /// `GET /api/chat/usage`.
    pub fn usage(token: Option<String>) -> Self {
        Self::new(
            "GET",
            "GET /api/chat/usage",
            "/api/chat/usage".into(),
            token,
        )
    }

    /// `GET /api/chat/models`.
    pub fn models(token: Option<String>) -> Self {
        Self::new(
            "GET",
            "GET /api/chat/models",
            "/api/chat/models".into(),
            token,
        )
    }

    /// `POST /api/chat/send` with `body`.
    pub fn send(body: &str, token: Option<String>) -> Self {
        Self::new(
            "POST",
            "POST /api/chat/send",
            "/api/chat/send".into(),
            token,
        )
        .body(body)
    }

    /// `POST /api/chat/send/stream` with `body`.
    pub fn send_stream(body: &str, token: Option<String>) -> Self {
        let path = "/api/chat/send/stream";
        Self::new("POST", "POST /api/chat/send/stream", path.into(), token).body(body)
    }

    /// `GET /api/chat/conversations`.
    pub fn list(token: Option<String>) -> Self {
        Self::new(
            "GET",
            "GET /api/chat/conversations",
            "/api/chat/conversations".into(),
            token,
        )
    }

    /// `GET /api/chat/conversations/{id}`.
    pub fn get(id: &str, token: Option<String>) -> Self {
        Self::on_conversation("GET", "GET /api/chat/conversations/{id}", id, token)
    }

    /// `GET /api/chat/conversations/{id}/stream`.
    pub fn attach(id: &str, token: Option<String>) -> Self {
        let route = "GET /api/chat/conversations/{id}/stream";
        let path = format!("/api/chat/conversations/{id}/stream");
        let mut e = Self::new("GET", route, path, token);
        e.path_parameter = Some(("id", id.to_owned()));
        e
    }

    /// `PATCH /api/chat/conversations/{id}` with `body`.
    pub fn rename(id: &str, body: &str, token: Option<String>) -> Self {
        Self::on_conversation("PATCH", "PATCH /api/chat/conversations/{id}", id, token).body(body)
    }

    /// `GET /api/chat/conversations/{id}/export` (add `?format=` with [`Event::query`]).
    pub fn export(id: &str, token: Option<String>) -> Self {
        let route = "GET /api/chat/conversations/{id}/export";
        let path = format!("/api/chat/conversations/{id}/export");
        let mut e = Self::new("GET", route, path, token);
        e.path_parameter = Some(("id", id.to_owned()));
        e
    }

    /// `GET /api/chat/export` (add `?cursor=` with [`Event::query`]).
    pub fn export_all(token: Option<String>) -> Self {
        Self::new(
            "GET",
            "GET /api/chat/export",
            "/api/chat/export".into(),
            token,
        )
    }

    /// `POST` (make) or `GET` (list) `/api/chat/conversations/{id}/shares`.
    pub fn shares(method: &'static str, id: &str, token: Option<String>) -> Self {
        let route = match method {
            "POST" => "POST /api/chat/conversations/{id}/shares",
            _ => "GET /api/chat/conversations/{id}/shares",
        };
        let path = format!("/api/chat/conversations/{id}/shares");
        let mut e = Self::new(method, route, path, token);
        e.path_parameter = Some(("id", id.to_owned()));
        e
    }

    /// `DELETE /api/chat/conversations/{id}/shares/{share_id}`.
    pub fn revoke_share(id: &str, share: &str, token: Option<String>) -> Self {
        let route = "DELETE /api/chat/conversations/{id}/shares/{share_id}";
        let path = format!("/api/chat/conversations/{id}/shares/{share}");
        let mut e = Self::new("DELETE", route, path, token);
        e.path_parameter = Some(("id", id.to_owned()));
        e.second_parameter = Some(("share_id", share.to_owned()));
        e
    }

    /// `GET /api/chat/shares/{share_id}` (public: no token).
    pub fn read_share(share: &str) -> Self {
        let route = "GET /api/chat/shares/{share_id}";
        let path = format!("/api/chat/shares/{share}");
        let mut e = Self::new("GET", route, path, None);
        e.path_parameter = Some(("share_id", share.to_owned()));
        e
    }

    /// `PUT` (with `body`) or `DELETE` (without)
    /// `/api/chat/conversations/{id}/messages/{message_id}/feedback`.
    pub fn feedback(id: &str, message: &str, body: Option<&str>, token: Option<String>) -> Self {
        let (method, route) = match body {
            Some(_) => (
                "PUT",
                "PUT /api/chat/conversations/{id}/messages/{message_id}/feedback",
            ),
            None => (
                "DELETE",
                "DELETE /api/chat/conversations/{id}/messages/{message_id}/feedback",
            ),
        };
        let path = format!("/api/chat/conversations/{id}/messages/{message}/feedback");
        let mut e = Self::new(method, route, path, token);
        e.path_parameter = Some(("id", id.to_owned()));
        e.second_parameter = Some(("message_id", message.to_owned()));
        match body {
            Some(b) => e.body(b),
            None => e,
        }
    }

    /// `DELETE /api/chat/conversations/{id}`.
    pub fn delete(id: &str, token: Option<String>) -> Self {
        Self::on_conversation("DELETE", "DELETE /api/chat/conversations/{id}", id, token)
    }

    /// `POST /api/chat/runpod/webhook/{token}` with `body` (no path token
    /// at all when `webhook_token` is `None`).
    pub fn webhook(webhook_token: Option<&str>, body: &str) -> Self {
        let path = format!("/api/chat/runpod/webhook/{}", webhook_token.unwrap_or(""));
        let mut e = Self::new("POST", "POST /api/chat/runpod/webhook/{token}", path, None);
        e.path_parameter = webhook_token.map(|t| ("token", t.to_owned()));
        e.body(body)
    }

    /// The same event with `key=value` added to the query string.
    pub fn query(mut self, key: &str, value: &str) -> Self {
        self.query.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The same event with `body`.
    pub fn body(mut self, body: &str) -> Self {
        self.body = Some(body.to_owned());
        self
    }

    /// The same event with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The same event with a body of raw bytes, base64-encoded as API
    /// Gateway delivers bodies that are not text.
    pub fn bytes_body(mut self, body: &[u8]) -> Self {
        use base64::Engine;
        self.body = Some(base64::engine::general_purpose::STANDARD.encode(body));
        self.base64 = true;
        self
    }

    /// The event as JSON.
    pub fn to_json(&self) -> Value {
        let mut headers = Map::new();
        headers.insert("content-type".into(), json!("application/json"));
        for (name, value) in &self.headers {
            headers.insert(name.clone(), json!(value));
        }
        if let Some(t) = &self.token {
            headers.insert("authorization".into(), json!(format!("Bearer {t}")));
        }
        let raw_query = self
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut event = json!({
            "version": "2.0",
            "routeKey": self.route,
            "rawPath": self.path,
            "rawQueryString": raw_query,
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "local",
                "domainName": "localhost",
                "domainPrefix": "localhost",
                "http": {
                    "method": self.method,
                    "path": self.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": "tests"
                },
                "requestId": REQUEST_ID,
                "routeKey": self.route,
                "stage": "$default",
                "time": "24/Nov/2026:12:00:00 +0000",
                "timeEpoch": 1795521600000u64
            },
            "isBase64Encoded": self.base64
        });
        if !self.query.is_empty() {
            let q: Map<_, _> = self
                .query
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            event["queryStringParameters"] = json!(q);
        }
        if let Some((name, value)) = &self.path_parameter {
            event["pathParameters"] = json!({ *name: value });
            if let Some((name, value)) = &self.second_parameter {
                event["pathParameters"][*name] = json!(value);
            }
        }
        if let Some(b) = &self.body {
            event["body"] = json!(b);
        }
        event
    }

    /// The event as the handlers receive it.
    pub fn request(&self) -> lambda_http::Request {
        lambda_http::request::from_str(&self.to_json().to_string())
            .expect("a valid API Gateway v2 event")
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
