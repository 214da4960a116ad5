//! What a function builds once per cold start and reuses for every request.

use std::env;

use aws_config::{
    environment::EnvironmentVariableCredentialsProvider, timeout::TimeoutConfig, BehaviorVersion,
    Region, SdkConfig,
};

use crate::{
    auth::Authenticator,
    chat::{Chat, HistoryLimits, PendingPolicy, QuotaLimits},
    config::{Config, ConfigError, RunPodConfig},
    runpod::RunPodClient,
    secrets::Environment,
    store::{CursorCodec, DynamoStore},
    webhook::Webhooks,
};

/// How long a webhook URL stays good after its job was submitted, beyond
/// the longest a reply may stay pending: RunPod retries a failed delivery.
const WEBHOOK_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Whom a function serves, which decides the secrets it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// The API's users: `JWT_SECRET` is required.
    Users,
    /// RunPod's webhook deliveries: no user tokens, signed URLs only.
    RunPod,
    /// The table's own upkeep (the purge): no secret at all.
    Maintenance,
    /// Anyone (the public read of a share link): no token, no secret.
    Public,
}

/// The AWS configuration the functions use. The endpoint, region and
/// credentials come from the standard AWS configuration
/// (`AWS_ENDPOINT_URL_DYNAMODB` points it at DynamoDB Local); the HTTP
/// client is hyper over rustls with compiled-in roots ([`crate::tls`]).
pub async fn load_aws_config() -> SdkConfig {
    let loader =
        aws_config::defaults(BehaviorVersion::latest()).http_client(crate::tls::aws_http_client());
    // Lambda puts the region and the role's credentials in the environment:
    // read them there rather than building the whole default chain (profile
    // files, SSO, web identity, ECS, IMDS), which took 2.3 of a cold
    // start's 7 ms (BENCHMARKS.md). Anywhere else, the default chain.
    let loader = match (env::var("AWS_REGION"), env::var_os("AWS_ACCESS_KEY_ID")) {
        (Ok(region), Some(_)) => loader
            .region(Region::new(region))
            .credentials_provider(EnvironmentVariableCredentialsProvider::new()),
        _ => loader,
    };
    loader.load().await
}

/// A function's configuration, token checker and use cases. `M` is the
/// model: `()` for the functions that never ask it. `S` is the store: the
/// DynamoDB one when deployed; tests may build one on the in-memory store
/// ([`App::with_store`], feature `test-util`).
pub struct App<M = (), S = DynamoStore> {
    /// The configuration, read once.
    pub config: Config,
    /// Checks the callers' tokens.
    pub auth: Authenticator,
    /// The use cases over the store and the model.
    pub chat: Chat<S, M>,
    /// The environment the configuration was read from, secrets fetched.
    env: Environment,
}

/// A DynamoDB client on `aws` with the configured timeouts, so a stalled
/// DynamoDB is an error in time rather than a request that hangs.
pub fn dynamodb_client(aws: &SdkConfig, config: &Config) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(dynamodb_config(aws, config).build())
}

/// The configuration of [`dynamodb_client`], to adjust before building.
pub fn dynamodb_config(aws: &SdkConfig, config: &Config) -> aws_sdk_dynamodb::config::Builder {
    let timeouts = TimeoutConfig::builder()
        .operation_attempt_timeout(config.dynamodb_attempt_timeout)
        .operation_timeout(config.dynamodb_timeout)
        .build();
    let builder = aws_sdk_dynamodb::config::Builder::from(aws).timeout_config(timeouts);
    // Tests only: every call recorded as the IAM actions it needs.
    match crate::call_log::CallLog::from_env() {
        Some(log) => builder.interceptor(log),
        None => builder,
    }
}

impl App {
    /// Reads the configuration (the secrets its `<NAME>_ARN` variables
    /// name fetched from Secrets Manager) and builds the DynamoDB client
    /// from [`load_aws_config`]. Fails when `callers` lacks a secret it needs.
    pub async fn from_env(callers: Callers) -> Result<Self, ConfigError> {
        let aws = load_aws_config().await;
        let env = Environment::load(&aws).await?;
        let config = Config::from_lookup(|name| env.get(name)).inspect_err(|e| {
            // One line that says which variable and which rule, before the
            // runtime prints the error's debug form.
            tracing::error!(error = %e, "the configuration is refused; the function does not start");
        })?;
        if callers == Callers::Users {
            config.require_jwt_secret()?;
        }
        if callers == Callers::RunPod && config.signing_secret.is_none() {
            // Locally JWT_SECRET stands in (see Config::signing_key).
            config
                .require_jwt_secret()
                .map_err(|_| ConfigError::Missing("SIGNING_SECRET"))?;
        }
        let dynamodb = dynamodb_client(&aws, &config);
        Ok(Self {
            env,
            ..Self::new(config, dynamodb)
        })
    }

    /// An app on `dynamodb`, without a model ([`App::with_model`] adds one).
    pub fn new(config: Config, dynamodb: aws_sdk_dynamodb::Client) -> Self {
        // Cursors, webhook tokens and log pseudonyms are signed with keys
        // derived from the signing secret, each key good for one purpose.
        let signing = config.signing_key();
        let store = DynamoStore::new(
            dynamodb,
            config.table_name.clone(),
            CursorCodec::new(&signing),
        );
        App::with_store(config, store)
    }
}

impl<S> App<(), S> {
    /// An app on `store`, without a model ([`App::with_model`] adds one).
    pub fn with_store(config: Config, store: S) -> Self {
        let signing = config.signing_key();
        let webhooks = Webhooks::new(
            config.webhook_base_url.clone(),
            &signing,
            config.pending_max_age + WEBHOOK_GRACE,
        );
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
            auth: Authenticator::new(&config, &signing),
            env: Environment::process(),
            chat: Chat::new(store, webhooks, limits, pending)
                .with_catalogue(config.models.clone())
                .with_quota(QuotaLimits {
                    messages: config.user_daily_message_limit,
                    tokens: config.user_daily_token_limit,
                    generations: config.user_max_concurrent_generations,
                    // A pending reply settles by this age (the read that finds
                    // it older fails it); a send's own claim by Lambda's 15 min.
                    generation_lifetime: config.pending_max_age
                        + std::time::Duration::from_secs(15 * 60),
                }),
            config,
        }
    }
}

impl<M, S> App<M, S> {
    /// The same app with `model` behind its use cases.
    pub fn with_model<N>(self, model: N) -> App<N, S> {
        App {
            config: self.config,
            auth: self.auth,
            chat: self.chat.with_model(model),
            env: self.env,
        }
    }

    /// The RunPod client its environment configures (`RUNPOD_API_KEY` read
    /// like the other secrets).
    /// Every model of the catalogue needs its endpoint here.
    pub fn runpod(&self) -> Result<RunPodClient, lambda_http::Error> {
        let config = RunPodConfig::from_lookup(|name| self.env.get(name))?;
        if self
            .config
            .models
            .models()
            .iter()
            .any(|m| m.endpoint_id.is_empty())
        {
            return Err(ConfigError::Missing("RUNPOD_ENDPOINT_ID").into());
        }
        Ok(RunPodClient::new(config)?)
    }

    /// The same app with the RunPod client its environment configures.
    pub fn with_runpod(self) -> Result<App<RunPodClient, S>, lambda_http::Error> {
        let model = self.runpod()?;
        Ok(self.with_model(model))
    }
}
