//! `DELETE /api/chat/conversations/{id}`: the conversation and its messages;
//! a reply still pending has its RunPod job cancelled.

use chat_shared::{http, telemetry, App, Callers};

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = App::from_env(Callers::Users).await?.with_runpod()?;
    http::run(|req| http::delete_conversation(&app, req)).await
}
