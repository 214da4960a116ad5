//! DynamoDB stream consumer: removes the messages of deleted conversations.

use chat_shared::{stream, telemetry, App};
use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let app = App::from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<stream::StreamEvent>| {
        let until = stream::until_deadline(event.context.deadline, app.config.deadline_margin);
        let app = &app;
        async move {
            stream::purge_deleted(&app.store, &event.payload, until)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
