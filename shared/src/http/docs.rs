//! `GET /openapi.json` and `GET /docs`: the API's contract and its
//! reference page, both fixed at build time (`openapi.yaml` and
//! `docs/api.html`). Public: no token, no table, no model.

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
}

impl ApiDocs {
    /// The document or the page, by the request's path.
    pub fn respond(&self, req: &Request) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/');
        let (content_type, body) = if path.ends_with("/openapi.json") {
            ("application/json", self.openapi_json)
        } else if path.ends_with("/docs") {
            ("text/html; charset=utf-8", self.page)
        } else {
            return not_found();
        };
        let mut resp = Response::new(Body::from(body));
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if content_type.starts_with("text/html") {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_POLICY),
            );
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

    const DOCS: ApiDocs = ApiDocs {
        openapi_json: r#"{"openapi":"3.1.0"}"#,
        page: "<html>reference</html>",
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
}
