//! `GET /api/chat/conversations/{id}/stream`: the conversation's latest
//! reply as Server-Sent Events, from where the client's `Last-Event-ID`
//! says it is (Lambda response streaming).

use std::sync::Arc;

use chat_shared::{http, telemetry, App, Callers};
use lambda_http::Request;

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = Arc::new(App::from_env(Callers::Users).await?.with_runpod()?);
    // Boxed: the future is too deep for the compiler to lay out inline here.
    http::serve_streaming(move |req: Request| Box::pin(http::attach_stream(app.clone(), req))).await
}
