//! `GET /openapi.json`, `GET /docs` and `GET /chat`: the API's contract,
//! its reference page and the chat page, all fixed at build time
//! (`openapi.yaml`, `docs/api.html`, `docs/chat.html`). Public: no token,
//! no table, no model (the chat page asks for a token and calls the API
//! from the browser).

use std::sync::OnceLock;

use base64::{engine::general_purpose::STANDARD, Engine};
use sha2::{Digest, Sha256};

use lambda_http::{
    http::{header, HeaderValue, StatusCode},
    Body, Request, Response,
};

/// The contract and its page, as the function binary embeds them.
pub struct ApiDocs {
    /// `openapi.yaml`, as JSON.
    pub openapi_json: &'static str,
    /// The self-contained HTML page built from it (`scripts/docs.sh`).
    pub page: &'static str,
    /// The chat page (`scripts/page.sh`): one inline `<style>` and one
    /// inline `<script>`, nothing loaded from elsewhere.
    pub chat: &'static str,
    /// The chat page's policy, made from its script's and style's hashes
    /// on the first request.
    pub chat_policy: OnceLock<String>,
}

impl ApiDocs {
    /// The document or the page, by the request's path.
    pub fn respond(&self, req: &Request) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/');
        let (content_type, body, policy) = if path.ends_with("/openapi.json") {
            ("application/json", self.openapi_json, None)
        } else if path.ends_with("/docs") {
            ("text/html; charset=utf-8", self.page, Some(PAGE_POLICY))
        } else if path.ends_with("/chat") {
            let policy = self.chat_policy.get_or_init(|| chat_policy(self.chat));
            ("text/html; charset=utf-8", self.chat, Some(policy.as_str()))
        } else {
            return not_found();
        };
        let mut resp = Response::new(Body::from(body));
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(policy) = policy.and_then(|p| HeaderValue::from_str(p).ok()) {
            headers.insert(header::CONTENT_SECURITY_POLICY, policy);
            headers.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        }
        // Both change only with a deployment.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        resp
    }
}

/// The page runs its own inline script and styles and loads nothing from
/// anywhere else: Redoc's attribution logo (an image on Redocly's CDN) is
/// blocked, so a reader's browser contacts no third party.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self' 'unsafe-inline' blob:; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; \
    connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The chat page may run its one script and style (by their SHA-256, so
/// nothing injected into the page runs: no `unsafe-inline`) and talk to its
/// own origin, the API; it loads nothing else, and no other site may frame it.
fn chat_policy(page: &str) -> String {
    let hash = |open: &str, close: &str| {
        let start = page.find(open).map(|i| i + open.len()).unwrap_or(0);
        let end = page[start..].find(close).map_or(start, |i| start + i);
        format!(
            "'sha256-{}'",
            STANDARD.encode(Sha256::digest(&page.as_bytes()[start..end]))
        )
    };
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash("<script>", "</script>"),
        hash("<style>", "</style>")
    )
}

fn not_found() -> Response<Body> {
    let mut resp = Response::new(Body::from(r#"{"message":"Not Found"}"#));
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    static DOCS: ApiDocs = ApiDocs {
        openapi_json: r#"{"openapi":"3.1.0"}"#,
        page: "<html>reference</html>",
        chat: "<html><style>p{}</style><p>chat</p><script>go()</script></html>",
        chat_policy: OnceLock::new(),
    };

    fn get(path: &str) -> Response<Body> {
        let req = lambda_http::http::Request::get(path)
            .body(Body::Empty)
            .unwrap();
        DOCS.respond(&req)
    }

    fn text(resp: &Response<Body>) -> &str {
        std::str::from_utf8(resp.body().as_ref()).unwrap()
    }

    #[test]
    fn serves_the_document_and_the_page_by_path() {
        let doc = get("https://api.example/openapi.json");
        assert_eq!(doc.status(), 200);
        assert_eq!(doc.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(text(&doc), DOCS.openapi_json);

        let page = get("https://api.example/docs/");
        assert_eq!(page.status(), 200);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(text(&page), DOCS.page);
        let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.starts_with("default-src 'none'"), "{policy}");

        assert_eq!(get("https://api.example/other").status(), 404);
    }

    #[test]
    fn the_chat_page_runs_only_its_own_script_and_style() {
        let page = get("https://api.example/chat");
        assert_eq!(page.status(), 200);
        assert_eq!(text(&page), DOCS.chat);
        let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        // `printf 'go()' | openssl dgst -sha256 -binary | base64`, and of `p{}`.
        assert!(
            policy.contains("script-src 'sha256-5KYv+PUboo5h+0+YAtGRPbwv5d/QxzHslP4YGnUaxRw=';"),
            "{policy}"
        );
        assert!(
            policy.contains("style-src 'sha256-gG2yISYereRMiG2lMXrbiUgi0Ubw9p7QCeWcroOvy9Y=';"),
            "{policy}"
        );
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
    }
}
