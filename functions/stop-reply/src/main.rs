//! `POST /api/chat/conversations/{id}/stop`: stops the reply being written;
//! it is stored cancelled with what was written, and its RunPod job cancelled.

use chat_shared::{http, telemetry, App, Callers};

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = App::from_env(Callers::Users).await?.with_runpod()?;
    http::run(|req| http::stop_reply(&app, req)).await
}
