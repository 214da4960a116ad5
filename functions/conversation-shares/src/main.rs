//! `POST`, `GET /api/chat/conversations/{id}/shares` and `DELETE …/shares/{share_id}`: a conversation's share links.

use chat_shared::{http, telemetry, App, Callers};

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = App::from_env(Callers::Users).await?;
    http::run(|req| http::conversation_shares(&app, req)).await
}
