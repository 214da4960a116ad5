//! What a function builds once per cold start and reuses for every request.

use aws_config::{BehaviorVersion, SdkConfig};

use crate::{
    auth::Authenticator,
    chat::{HistoryLimits, PendingPolicy},
    config::{Config, ConfigError},
    store::{CursorCodec, DynamoStore},
    webhook::Webhooks,
};

/// The AWS configuration the functions use. The endpoint, region and
/// credentials come from the standard AWS configuration
/// (`AWS_ENDPOINT_URL_DYNAMODB` points it at DynamoDB Local); the HTTPS
/// client is the SDK's own with compiled-in roots ([`crate::tls`]).
pub async fn load_aws_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::tls::aws_http_client())
        .load()
        .await
}

pub struct App {
    pub config: Config,
    pub auth: Authenticator,
    pub store: DynamoStore,
    pub webhooks: Webhooks,
}

impl App {
    /// Reads the configuration and builds the DynamoDB client from
    /// [`load_aws_config`].
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let aws = load_aws_config().await;
        Ok(Self::new(config, aws_sdk_dynamodb::Client::new(&aws)))
    }

    pub fn new(config: Config, dynamodb: aws_sdk_dynamodb::Client) -> Self {
        // Cursors are signed with a key derived from the JWT secret: one
        // secret to manage, and a cursor is worthless without a valid token anyway.
        let cursors = CursorCodec::new(config.jwt_secret.expose().as_bytes());
        Self {
            webhooks: Webhooks::new(
                config.webhook_base_url.clone(),
                config.jwt_secret.expose().as_bytes(),
            ),
            auth: Authenticator::new(&config),
            store: DynamoStore::new(dynamodb, config.table_name.clone(), cursors),
            config,
        }
    }

    pub fn pending_policy(&self) -> PendingPolicy {
        PendingPolicy {
            max_age: self.config.pending_max_age,
            max_checks: self.config.pending_checks_per_read,
        }
    }

    pub fn history_limits(&self) -> HistoryLimits {
        HistoryLimits {
            max_messages: self.config.history_max_messages,
            max_chars: self.config.history_max_chars,
        }
    }
}
