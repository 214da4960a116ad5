//! Configuration, read once per cold start from the environment.
//!
//! Secrets are held in [`Secret`], whose `Debug` prints nothing, so a config
//! can be logged without leaking them.

use std::{env, fmt, time::Duration};

/// A secret value: its `Debug` prints nothing, so configs can be logged.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What every function needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The DynamoDB table (`TABLE_NAME`).
    pub table_name: String,
    /// The HS256 secret of the callers' tokens (`JWT_SECRET`); the
    /// functions that serve users do not start without it.
    pub jwt_secret: Option<Secret>,
    /// The secret page cursors, webhook URLs and log pseudonyms are signed
    /// with (`SIGNING_SECRET`), one derived key per purpose; see
    /// [`Config::signing_key`].
    pub signing_secret: Option<Secret>,
    /// When set, tokens must carry this `iss`.
    pub jwt_issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    pub jwt_audience: Option<String>,
    /// Longest user message, in characters.
    pub max_message_chars: usize,
    /// Longest reply kept, in characters; a longer one is stored cut.
    pub max_reply_chars: usize,
    /// Sends per user per UTC day (`USER_DAILY_MESSAGE_LIMIT`); `None`: unlimited.
    pub user_daily_message_limit: Option<u64>,
    /// Tokens per user per UTC day (`USER_DAILY_TOKEN_LIMIT`); `None`: unlimited.
    pub user_daily_token_limit: Option<u64>,
    /// Replies per user in the making at once
    /// (`USER_MAX_CONCURRENT_GENERATIONS`, at least 1); `None`: unlimited.
    pub user_max_concurrent_generations: Option<u32>,
    /// Most messages of a conversation sent to the model.
    pub history_max_messages: u32,
    /// Most characters of a conversation sent to the model.
    pub history_max_chars: usize,
    /// Taken off the Lambda invocation's deadline to leave time to store a
    /// pending reply and answer.
    pub deadline_margin: Duration,
    /// Time allowed for the model when the invocation carries no deadline
    /// (tests, local tools).
    pub default_request_budget: Duration,
    /// How long a send waits for the reply before answering 202 pending.
    pub send_wait: Duration,
    /// Where RunPod posts finished jobs (`…/api/chat/runpod/webhook`);
    /// without it pending replies complete when read.
    pub webhook_base_url: Option<String>,
    /// A reply pending longer than this is marked failed.
    pub pending_max_age: Duration,
    /// Longest wait for one DynamoDB attempt (`DYNAMODB_ATTEMPT_TIMEOUT_MS`).
    pub dynamodb_attempt_timeout: Duration,
    /// Longest wait for one DynamoDB call, its retries included
    /// (`DYNAMODB_TIMEOUT_MS`); the deadline margin leaves room for one.
    pub dynamodb_timeout: Duration,
    /// Most pending replies one read checks at RunPod.
    pub pending_checks_per_read: usize,
    /// Bytes an export of every conversation sends before it ends with a
    /// cursor to go on from (`EXPORT_MAX_BYTES`): Lambda cuts a streamed
    /// response at 200 MB ("Response streaming for Lambda functions").
    pub export_max_bytes: usize,
    /// The models conversations choose from (`RUNPOD_MODELS`), and the
    /// default instructions (`SYSTEM_PROMPT`).
    pub models: crate::catalogue::Catalogue,
}

/// How the conversation is sent to the worker (`RUNPOD_INPUT_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// `{"messages": [...], "sampling_params": {...}}`: the official vLLM worker.
    Messages,
    /// `{"prompt": "..."}`: the conversation rendered as text.
    Prompt,
}

/// What the send function needs to reach RunPod.
#[derive(Debug, Clone)]
pub struct RunPodConfig {
    /// The API base; requests go to `{base_url}/{endpoint_id}/...`.
    pub base_url: String,
    /// The RunPod API key.
    pub api_key: Secret,
    /// Timeout of one HTTP call (`run`, `status`).
    pub request_timeout: Duration,
    /// Retries after the first attempt: of `status` after 429, 5xx,
    /// timeouts and connection errors; of `run` only after 429 and
    /// connection errors (see [`crate::runpod`]).
    pub max_retries: u32,
    /// The first retry's delay; it doubles, jittered.
    pub retry_base_delay: Duration,
    /// The first `status` poll's delay; it grows x1.5.
    pub poll_initial_delay: Duration,
    /// The longest delay between `status` polls.
    pub poll_max_delay: Duration,
    /// The most bytes of one RunPod answer read; a longer one is refused
    /// unread, so a runaway worker cannot exhaust the function's memory.
    pub max_response_bytes: usize,
}

/// RunPod's API, the default of `RUNPOD_BASE_URL`.
pub const DEFAULT_RUNPOD_BASE_URL: &str = "https://api.runpod.ai/v2";

/// A configuration that cannot be used; the function does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    /// A secret named by `<NAME>_ARN` could not be read.
    #[error("the secret for {name} (named by {name}_ARN) could not be read: {reason}")]
    Secret {
        /// The variable the secret stands for.
        name: &'static str,
        /// Why (the SDK's error: never the value).
        reason: String,
    },
    #[error("environment variable {name} is invalid: {reason}")]
    /// A variable is set to something unusable.
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| env::var(name).ok())
    }

    /// Reads the configuration through `get`, so tests need not touch the
    /// process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&get);
        Ok(Self {
            table_name: vars.required("TABLE_NAME")?,
            jwt_secret: vars.optional("JWT_SECRET").map(Secret),
            signing_secret: vars.optional("SIGNING_SECRET").map(Secret),
            jwt_issuer: vars.optional("JWT_ISSUER"),
            jwt_audience: vars.optional("JWT_AUDIENCE"),
            max_message_chars: vars.number("MAX_MESSAGE_CHARS", 16_000)?,
            max_reply_chars: vars.number("MAX_REPLY_CHARS", 100_000)?,
            user_daily_message_limit: vars.optional_number("USER_DAILY_MESSAGE_LIMIT")?,
            user_daily_token_limit: vars.optional_number("USER_DAILY_TOKEN_LIMIT")?,
            user_max_concurrent_generations: match vars
                .optional_number("USER_MAX_CONCURRENT_GENERATIONS")?
            {
                Some(0) => {
                    return Err(ConfigError::Invalid {
                        name: "USER_MAX_CONCURRENT_GENERATIONS",
                        reason: "must be at least 1 (unset it for no cap)".into(),
                    })
                }
                cap => cap,
            },
            history_max_messages: vars.number("HISTORY_MAX_MESSAGES", 20)?,
            history_max_chars: vars.number("HISTORY_MAX_CHARS", 24_000)?,
            deadline_margin: Duration::from_millis(vars.number("DEADLINE_MARGIN_MS", 2_000)?),
            default_request_budget: Duration::from_secs(vars.number("REQUEST_BUDGET_SECS", 25)?),
            send_wait: {
                let secs: f64 = vars.number("SEND_WAIT_SECONDS", 25.0)?;
                Duration::try_from_secs_f64(secs).map_err(|e| ConfigError::Invalid {
                    name: "SEND_WAIT_SECONDS",
                    reason: e.to_string(),
                })?
            },
            webhook_base_url: vars
                .optional("WEBHOOK_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_owned()),
            pending_max_age: Duration::from_secs(vars.number("PENDING_MAX_AGE_SECS", 3600)?),
            pending_checks_per_read: vars.number("PENDING_CHECKS_PER_READ", 5)?,
            export_max_bytes: vars.number("EXPORT_MAX_BYTES", 150_000_000)?,
            dynamodb_attempt_timeout: Duration::from_millis(
                vars.number("DYNAMODB_ATTEMPT_TIMEOUT_MS", 1_000)?,
            ),
            dynamodb_timeout: Duration::from_millis(vars.number("DYNAMODB_TIMEOUT_MS", 2_000)?),
            models: crate::catalogue::Catalogue::from_lookup(&get)?,
        })
    }

    /// The JWT secret, for the functions that serve users.
    pub fn require_jwt_secret(&self) -> Result<&Secret, ConfigError> {
        self.jwt_secret
            .as_ref()
            .ok_or(ConfigError::Missing("JWT_SECRET"))
    }

    /// The key material cursors, webhook tokens and log pseudonyms are
    /// signed with: `SIGNING_SECRET`. Without it (local runs) `JWT_SECRET`
    /// stands in, with a warning: then whoever issues user tokens could also
    /// forge webhook URLs. A function with neither (the purge) gets a random
    /// key: nothing it signs leaves the process.
    pub fn signing_key(&self) -> Vec<u8> {
        if let Some(secret) = &self.signing_secret {
            return secret.expose().as_bytes().to_vec();
        }
        if let Some(jwt) = &self.jwt_secret {
            tracing::warn!(
                "SIGNING_SECRET is not set: signing with JWT_SECRET; set it when deployed"
            );
            return jwt.expose().as_bytes().to_vec();
        }
        rand::random::<[u8; 32]>().to_vec()
    }
}

impl RunPodConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| env::var(name).ok())
    }

    /// Reads the configuration through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&get);
        let base_url = vars
            .optional("RUNPOD_BASE_URL")
            .unwrap_or_else(|| DEFAULT_RUNPOD_BASE_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            base_url,
            api_key: Secret(vars.required("RUNPOD_API_KEY")?),
            request_timeout: Duration::from_millis(
                vars.number("RUNPOD_REQUEST_TIMEOUT_MS", 10_000)?,
            ),
            max_retries: vars.number("RUNPOD_MAX_RETRIES", 3)?,
            retry_base_delay: Duration::from_millis(vars.number("RUNPOD_RETRY_BASE_MS", 200)?),
            poll_initial_delay: Duration::from_millis(vars.number("RUNPOD_POLL_INITIAL_MS", 250)?),
            poll_max_delay: Duration::from_millis(vars.number("RUNPOD_POLL_MAX_MS", 2_000)?),
            max_response_bytes: vars.number("RUNPOD_MAX_RESPONSE_BYTES", 2 * 1024 * 1024)?,
        })
    }
}

struct Vars<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    /// Unset and empty are the same: SAM passes empty strings for unset parameters.
    fn optional(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// A number, or `None` when unset.
    fn optional_number<T>(&self, name: &'static str) -> Result<Option<T>, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        self.optional(name)
            .map(|raw| {
                raw.trim()
                    .parse()
                    .map_err(|e: T::Err| ConfigError::Invalid {
                        name,
                        reason: e.to_string(),
                    })
            })
            .transpose()
    }

    fn number<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.optional_number(name)?.unwrap_or(default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_apply() {
        let c = Config::from_lookup(lookup(&[("TABLE_NAME", "t"), ("JWT_SECRET", "s")])).unwrap();
        assert_eq!(c.max_message_chars, 16_000);
        assert_eq!(c.jwt_issuer, None);
        let r = RunPodConfig::from_lookup(lookup(&[
            ("RUNPOD_ENDPOINT_ID", "ep"),
            ("RUNPOD_API_KEY", "k"),
        ]))
        .unwrap();
        assert_eq!(r.base_url, DEFAULT_RUNPOD_BASE_URL);
        assert_eq!(c.models.default_model().input_format, InputFormat::Messages);
    }

    #[test]
    fn missing_and_invalid_values_are_named() {
        let c = Config::from_lookup(lookup(&[("TABLE_NAME", "t")])).unwrap();
        let err = c.require_jwt_secret().unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET"));
        let err = Config::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("JWT_SECRET", "s"),
            ("MAX_MESSAGE_CHARS", "lots"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("MAX_MESSAGE_CHARS"));
        // A cap of 0 generations would refuse every send: a typo, refused.
        let err = Config::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("USER_MAX_CONCURRENT_GENERATIONS", "0"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("USER_MAX_CONCURRENT_GENERATIONS"));
        let err = Config::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("RUNPOD_ENDPOINT_ID", "ep"),
            ("RUNPOD_INPUT_FORMAT", "xml"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("RUNPOD_INPUT_FORMAT"));
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config::from_lookup(lookup(&[
            ("TABLE_NAME", "t"),
            ("JWT_SECRET", "hunter2-very-secret"),
        ]))
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
