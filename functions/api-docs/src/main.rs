//! `GET /openapi.json`, `GET /docs` and `GET /chat`: the API's contract,
//! its reference page and the chat page.

use std::sync::OnceLock;

use chat_shared::{http, http::ApiDocs, telemetry};

static DOCS: ApiDocs = ApiDocs {
    openapi_json: include_str!(concat!(env!("OUT_DIR"), "/openapi.json")),
    page: include_str!("../../../docs/api.html"),
    chat: include_str!("../../../docs/chat.html"),
    chat_policy: OnceLock::new(),
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    http::run(|req| async move { DOCS.respond(&req) }).await
}
