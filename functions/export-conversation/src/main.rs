//! `GET /api/chat/conversations/{id}/export`: one conversation as a JSON
//! or Markdown file.

use chat_shared::{http, telemetry, App, Callers};

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = App::from_env(Callers::Users).await?;
    http::run(|req| http::export_conversation(&app, req)).await
}
