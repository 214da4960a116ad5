//! `PUT` and `DELETE /api/chat/conversations/{id}/messages/{message_id}/feedback`:
//! a reply's rating, given, replaced or taken back.

use chat_shared::{http, telemetry, App, Callers};

// A Lambda instance serves one request at a time: one thread is enough.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let app = App::from_env(Callers::Users).await?;
    http::run(|req| http::message_feedback(&app, req)).await
}
