//! Secrets read at cold start through the Secrets Manager SDK, against a
//! wiremock Secrets Manager answering `GetSecretValue` as AWS documents it.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_secretsmanager::config::Credentials;
use chat_shared::{config::Config, secrets::Environment};
use serde_json::json;
use wiremock::{
    matchers::{body_partial_json, header, method},
    Mock, MockServer, ResponseTemplate,
};

const JWT_ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:chat/jwt-AbCdEf";
const SIGNING_ARN: &str =
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:chat/signing-AbCdEf";

/// The configuration the functions load, but for the endpoint and
/// credentials: the same HTTP client ([`chat_shared::tls::aws_http_client`]).
async fn aws(server: &MockServer) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(chat_shared::tls::aws_http_client())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(server.uri())
        .load()
        .await
}

async fn secret(server: &MockServer, arn: &str, value: &str) {
    Mock::given(method("POST"))
        .and(header("x-amz-target", "secretsmanager.GetSecretValue"))
        .and(body_partial_json(json!({ "SecretId": arn })))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/x-amz-json-1.1")
                .set_body_json(json!({
                    "ARN": arn, "Name": "chat", "SecretString": value,
                    "VersionId": "v1", "CreatedDate": 1.7e9,
                })),
        )
        .expect(1)
        .mount(server)
        .await;
}

fn vars(pairs: &'static [(&'static str, &'static str)]) -> Environment {
    Environment::of(|name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

#[tokio::test]
async fn secrets_named_by_arn_are_fetched_once_and_others_read_plain() {
    let server = MockServer::start().await;
    secret(&server, JWT_ARN, "jwt-from-secrets-manager").await;
    secret(&server, SIGNING_ARN, "signing-from-secrets-manager\n").await;
    let env = vars(&[
        ("TABLE_NAME", "chat"),
        ("JWT_SECRET_ARN", JWT_ARN),
        ("SIGNING_SECRET_ARN", SIGNING_ARN),
        ("RUNPOD_API_KEY", "plain-key"),
    ])
    .fetch(&aws(&server).await)
    .await
    .unwrap();
    assert_eq!(
        env.get("JWT_SECRET").as_deref(),
        Some("jwt-from-secrets-manager")
    );
    assert_eq!(
        env.get("SIGNING_SECRET").as_deref(),
        Some("signing-from-secrets-manager"),
        "trailing whitespace of a pasted secret is dropped"
    );
    assert_eq!(env.get("RUNPOD_API_KEY").as_deref(), Some("plain-key"));
    let config = Config::from_lookup(|name| env.get(name)).unwrap();
    assert_eq!(
        config.require_jwt_secret().unwrap().expose(),
        "jwt-from-secrets-manager"
    );
    assert!(!format!("{config:?}").contains("from-secrets-manager"));
}

#[tokio::test]
async fn without_arns_nothing_is_asked() {
    let server = MockServer::start().await;
    let env = vars(&[("JWT_SECRET", "plain")])
        .fetch(&aws(&server).await)
        .await
        .unwrap();
    assert_eq!(env.get("JWT_SECRET").as_deref(), Some("plain"));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_secret_that_cannot_be_read_stops_the_start_naming_its_variable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("content-type", "application/x-amz-json-1.1")
                .set_body_json(json!({
                    "__type": "ResourceNotFoundException",
                    "Message": "Secrets Manager can't find the specified secret.",
                })),
        )
        .mount(&server)
        .await;
    let env = vars(&[("JWT_SECRET_ARN", JWT_ARN)]);
    let err = match env.fetch(&aws(&server).await).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a missing secret must stop the start"),
    };
    assert!(err.contains("JWT_SECRET_ARN"), "{err}");
    assert!(err.contains("ResourceNotFoundException"), "{err}");
}
