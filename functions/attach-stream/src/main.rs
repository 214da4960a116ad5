//! `GET /api/chat/conversations/{id}/stream`: the conversation's latest
//! reply as Server-Sent Events, from where the client's `Last-Event-ID`
//! says it is (Lambda response streaming).

use std::sync::Arc;

use chat_shared::{http, telemetry, App, Callers};
use lambda_http::{service_fn, Request};

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = Arc::new(App::from_env(Callers::Users).await?.with_runpod()?);
    lambda_http::run_with_streaming_response(service_fn(move |req: Request| {
        // Boxed: the attach future is too deep for the compiler to lay out inline here.
        let response = Box::pin(http::attach_stream(app.clone(), req));
        async move { Ok::<_, lambda_http::Error>(response.await) }
    }))
    .await
}
