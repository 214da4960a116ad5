//! `GET /api/chat/export`: every one of the caller's conversations as
//! NDJSON, written as it is read (Lambda response streaming).

use std::sync::Arc;

use chat_shared::{http, telemetry, App, Callers};
use lambda_http::Request;

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = Arc::new(App::from_env(Callers::Users).await?);
    http::serve_streaming(move |req: Request| Box::pin(http::export_all(app.clone(), req))).await
}
