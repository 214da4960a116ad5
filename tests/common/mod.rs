//! Helpers shared by the integration tests: a DynamoDB Local client, a
//! fresh table per test, configs and apps pointed at them.
#![allow(dead_code)]

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::Client;
use chat_service_dev::{table::TableDefinition, DEV_JWT_SECRET};
use chat_shared::{
    auth::issue_token,
    config::{Config, RunPodConfig},
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
    let table = table.to_owned();
    let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_lookup(move |k| {
        if let Some((_, v)) = extra.iter().find(|(name, _)| name == k) {
            return Some(v.clone());
        }
        match k {
            "TABLE_NAME" => Some(table.clone()),
            "JWT_SECRET" => Some(DEV_JWT_SECRET.to_owned()),
            _ => None,
        }
    })
    .unwrap()
}

pub fn runpod_config(base_url: &str, extra: &[(&str, &str)]) -> RunPodConfig {
    let base_url = base_url.to_owned();
    let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    RunPodConfig::from_lookup(move |k| {
        if let Some((_, v)) = extra.iter().find(|(name, _)| name == k) {
            return Some(v.clone());
        }
        match k {
            "RUNPOD_BASE_URL" => Some(base_url.clone()),
            "RUNPOD_ENDPOINT_ID" => Some("test-endpoint".into()),
            "RUNPOD_API_KEY" => Some("test-runpod-key".into()),
            "RUNPOD_RETRY_BASE_MS" => Some("10".into()),
            "RUNPOD_POLL_INITIAL_MS" => Some("20".into()),
            "RUNPOD_POLL_MAX_MS" => Some("50".into()),
            _ => None,
        }
    })
    .unwrap()
}

/// An app on a fresh table.
pub async fn app() -> App {
    let client = dynamo().await;
    let table = fresh_table(&client).await;
    App::new(config(&table), client)
}

pub fn token(user: &str) -> String {
    issue_token(DEV_JWT_SECRET, user, 3600, None, None)
}
