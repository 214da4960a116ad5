//! DynamoDB stream consumer: removes the messages of deleted conversations.

use chat_shared::{deadline, stream, telemetry, App, Callers};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let app = App::from_env(Callers::Maintenance).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<stream::StreamEvent>| {
        let config = &app.config;
        let until = deadline::until(
            Some(event.context.deadline),
            config.deadline_margin,
            config.default_request_budget,
        );
        let app = &app;
        async move {
            stream::purge_deleted(app.chat.store(), &event.payload, until)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
