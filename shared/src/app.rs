//! What a function builds once per cold start and reuses for every request.

use aws_config::{BehaviorVersion, SdkConfig};

use crate::{
    auth::Authenticator,
    chat::{Chat, HistoryLimits, PendingPolicy, QuotaLimits},
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

/// A function's configuration, token checker and use cases. `M` is the
/// model: `()` for the functions that never ask it.
pub struct App<M = ()> {
    /// The configuration, read once.
    pub config: Config,
    /// Checks the callers' tokens.
    pub auth: Authenticator,
    /// The use cases over the DynamoDB store and the model.
    pub chat: Chat<DynamoStore, M>,
}

impl App {
    /// Reads the configuration and builds the DynamoDB client from
    /// [`load_aws_config`].
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let aws = load_aws_config().await;
        Ok(Self::new(config, aws_sdk_dynamodb::Client::new(&aws)))
    }

    /// An app on `dynamodb`, without a model ([`App::with_model`] adds one).
    pub fn new(config: Config, dynamodb: aws_sdk_dynamodb::Client) -> Self {
        // Cursors and webhook tokens are signed with keys derived from the
        // JWT secret: one secret to manage, each key good for one purpose.
        let secret = config.jwt_secret.expose().as_bytes();
        let store = DynamoStore::new(
            dynamodb,
            config.table_name.clone(),
            CursorCodec::new(secret),
        );
        let webhooks = Webhooks::new(config.webhook_base_url.clone(), secret);
        let limits = HistoryLimits {
            max_messages: config.history_max_messages,
            max_chars: config.history_max_chars,
            max_reply_chars: config.max_reply_chars,
        };
        let pending = PendingPolicy {
            max_age: config.pending_max_age,
            max_checks: config.pending_checks_per_read,
        };
        Self {
            auth: Authenticator::new(&config),
            chat: Chat::new(store, webhooks, limits, pending).with_quota(QuotaLimits {
                messages: config.user_daily_message_limit,
                tokens: config.user_daily_token_limit,
            }),
            config,
        }
    }
}

impl<M> App<M> {
    /// The same app with `model` behind its use cases.
    pub fn with_model<N>(self, model: N) -> App<N> {
        App {
            config: self.config,
            auth: self.auth,
            chat: self.chat.with_model(model),
        }
    }
}
