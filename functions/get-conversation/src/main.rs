//! `GET /api/chat/conversations/{id}`: one of the caller's conversations.
//! Pending replies on the page are checked at RunPod and stored when done.

use chat_shared::{http, telemetry, App, Callers};

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = App::from_env(Callers::Users).await?.with_runpod()?;
    http::run(|req| http::get_conversation(&app, req)).await
}
