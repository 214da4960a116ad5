//! `GET /openapi.json` and `GET /docs`: the API's contract and reference page.

use chat_shared::{http, http::ApiDocs, telemetry};

static DOCS: ApiDocs = ApiDocs {
    openapi_json: include_str!(concat!(env!("OUT_DIR"), "/openapi.json")),
    page: include_str!("../../../docs/api.html"),
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    http::run(|req| async move { DOCS.respond(&req) }).await
}
