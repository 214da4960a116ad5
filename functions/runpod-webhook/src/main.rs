//! `POST /api/chat/runpod/webhook/{token}`: RunPod delivers a finished job.

use chat_shared::{http, telemetry, App, Callers};

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = App::from_env(Callers::RunPod).await?.with_runpod()?;
    http::run(|req| http::runpod_webhook(&app, req)).await
}
