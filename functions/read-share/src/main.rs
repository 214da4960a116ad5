//! `GET /api/chat/shares/{share_id}`: what a share link shows, without a token.

use chat_shared::{http, telemetry, App, Callers};

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = App::from_env(Callers::Public).await?;
    http::run(|req| http::read_share(&app, req)).await
}
