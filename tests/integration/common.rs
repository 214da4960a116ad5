//! Helpers shared by the integration tests: a DynamoDB Local client, a
//! fresh table per test, configs and apps pointed at them.

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::{types::AttributeValue, Client};
pub use chat_service_dev::apigw::{self, Event};
use chat_service_dev::{table::TableDefinition, DEV_JWT_SECRET, DEV_SIGNING_SECRET};
use chat_shared::{
    auth::issue_token,
    config::{Config, RunPodConfig},
    domain::{ConversationId, UserId},
    runpod::RunPodClient,
    store::keys,
    App,
};

/// A client for the DynamoDB that `scripts/test.sh` started. Fails (never
/// skips) when there is none.
pub async fn dynamo() -> Client {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_ok(),
        "AWS_ENDPOINT_URL_DYNAMODB is not set: these tests need DynamoDB Local; run them with scripts/test.sh"
    );
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    Client::new(&aws)
}

/// A new table with the template's schema, unique to the calling test.
pub async fn fresh_table(client: &Client) -> String {
    let name = format!("test-{}", uuid::Uuid::new_v4());
    TableDefinition::from_template()
        .unwrap()
        .create(client, &name)
        .await
        .expect("create table on DynamoDB Local");
    name
}

pub fn config(table: &str) -> Config {
    config_with(table, &[])
}

pub fn config_with(table: &str, extra: &[(&str, &str)]) -> Config {
    let defaults = [
        ("TABLE_NAME", table),
        ("JWT_SECRET", DEV_JWT_SECRET),
        ("SIGNING_SECRET", DEV_SIGNING_SECRET),
        // The catalogue's one model, as a deployment without RUNPOD_MODELS has it.
        ("RUNPOD_ENDPOINT_ID", "test-endpoint"),
    ];
    Config::from_lookup(lookup(&defaults, extra)).unwrap()
}

pub fn runpod_config(base_url: &str, extra: &[(&str, &str)]) -> RunPodConfig {
    let defaults = [
        ("RUNPOD_BASE_URL", base_url),
        ("RUNPOD_ENDPOINT_ID", "test-endpoint"),
        ("RUNPOD_API_KEY", "test-runpod-key"),
        ("RUNPOD_RETRY_BASE_MS", "10"),
        ("RUNPOD_POLL_INITIAL_MS", "20"),
        ("RUNPOD_POLL_MAX_MS", "50"),
    ];
    RunPodConfig::from_lookup(lookup(&defaults, extra)).unwrap()
}

/// An environment of `defaults` with `extra` set over them.
fn lookup(defaults: &[(&str, &str)], extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = defaults
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The last setting of a name wins: `extra` over `defaults`.
    move |name| {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// An app on a fresh table, with a model that is never reached.
pub async fn app() -> App<RunPodClient> {
    let client = dynamo().await;
    let table = fresh_table(&client).await;
    App::new(config(&table), client).with_model(idle_model())
}

pub fn token(user: &str) -> String {
    issue_token(DEV_JWT_SECRET, user, 3600, None, None)
}

/// Status and JSON body of a handler's response.
pub fn read(resp: lambda_http::Response<lambda_http::Body>) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let body: &[u8] = resp.body().as_ref();
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {body:?}"))
    };
    (status, json)
}

/// Asserts the one error body shape and returns its code.
pub fn error_code(status: u16, body: &serde_json::Value, expected_status: u16) -> String {
    assert_eq!(status, expected_status, "body: {body}");
    let err = &body["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
    assert_eq!(err["request_id"], apigw::REQUEST_ID, "body: {body}");
    err["code"].as_str().expect("error.code").to_owned()
}

/// A RunPod client for tests that never reach the model (nothing listens
/// on the discard port, and nothing is sent unless a reply is pending).
pub fn idle_model() -> RunPodClient {
    RunPodClient::new(runpod_config("http://127.0.0.1:9", &[])).unwrap()
}

/// Items in a conversation's partition (the conversation and its
/// messages), read straight from the table.
pub async fn partition_items<M>(app: &App<M>, user: &UserId, conversation: ConversationId) -> i32 {
    partition_items_in(&app.config.table_name, user, conversation).await
}

/// Items in a conversation's partition of `table`, read straight from it.
pub async fn partition_items_in(table: &str, user: &UserId, conversation: ConversationId) -> i32 {
    dynamo()
        .await
        .query()
        .table_name(table)
        .key_condition_expression("#pk = :pk")
        .expression_attribute_names("#pk", keys::PK)
        .expression_attribute_values(
            ":pk",
            AttributeValue::S(keys::conversation_pk(user, conversation)),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .count()
}

/// A RunPod client on the local RunPod endpoint, started in process.
pub async fn local_runpod_model() -> RunPodClient {
    let runpod = chat_service_dev::runpod_local::LocalRunPod::new(
        chat_service_dev::runpod_local::Settings {
            api_key: Some("test-runpod-key".into()),
            ..Default::default()
        },
    )
    .spawn()
    .await;
    RunPodClient::new(runpod_config(&runpod, &[])).unwrap()
}
