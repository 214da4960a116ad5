//! The secrets a function reads at cold start.
//!
//! Deployed, `JWT_SECRET`, `SIGNING_SECRET` and `RUNPOD_API_KEY` live in AWS
//! Secrets Manager: a function's environment holds only the ARNs of the ones
//! it uses (`JWT_SECRET_ARN`, ...), and its role may read those alone, so no
//! secret sits in plain text in a function's configuration or in the
//! stack's parameters. Locally the plain variables stay the simple path.

use std::{collections::HashMap, env, sync::Arc};

use aws_config::SdkConfig;

use crate::config::ConfigError;

/// The variables that may instead be read from Secrets Manager, through
/// `<NAME>_ARN`.
pub const SECRET_VARS: [&str; 3] = ["JWT_SECRET", "SIGNING_SECRET", "RUNPOD_API_KEY"];

type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The environment a configuration is read from: the variables, with the
/// secrets they name fetched.
#[derive(Clone)]
pub struct Environment {
    fetched: HashMap<&'static str, String>,
    vars: Lookup,
}

impl Environment {
    /// The process environment as it is, fetching nothing.
    pub fn process() -> Self {
        Self::of(|name| env::var(name).ok())
    }

    /// The variables `vars` gives, fetching nothing.
    pub fn of(vars: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            fetched: HashMap::new(),
            vars: Arc::new(vars),
        }
    }

    /// The process environment, with every secret named by a `<NAME>_ARN`
    /// fetched from Secrets Manager (concurrently: one round trip in all).
    pub async fn load(aws: &SdkConfig) -> Result<Self, ConfigError> {
        Self::process().fetch(aws).await
    }

    /// This environment with the secrets its `<NAME>_ARN` variables name
    /// fetched; without any, no client is built and nothing is asked.
    pub async fn fetch(mut self, aws: &SdkConfig) -> Result<Self, ConfigError> {
        let wanted: Vec<(&'static str, String)> = SECRET_VARS
            .iter()
            .filter_map(|&name| Some((name, self.get(&format!("{name}_ARN"))?)))
            .collect();
        if wanted.is_empty() {
            return Ok(self);
        }
        let client = aws_sdk_secretsmanager::Client::new(aws);
        let reads = wanted
            .iter()
            .map(|(name, arn)| read_secret(&client, name, arn));
        for (name, value) in futures::future::try_join_all(reads).await? {
            self.fetched.insert(name, value);
        }
        Ok(self)
    }

    /// A variable's value: the fetched secret, else the variable itself.
    /// Unset and empty are the same (SAM passes empty strings for unset
    /// parameters).
    pub fn get(&self, name: &str) -> Option<String> {
        self.fetched
            .get(name)
            .cloned()
            .or_else(|| (self.vars)(name))
            .filter(|v| !v.trim().is_empty())
    }
}

async fn read_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &'static str,
    arn: &str,
) -> Result<(&'static str, String), ConfigError> {
    let failed = |reason: String| ConfigError::Secret { name, reason };
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        // The SDK's error names the call and the cause, never the value.
        .map_err(|e| failed(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))?;
    let value = out
        .secret_string()
        .ok_or_else(|| failed("the secret has no string value".into()))?;
    Ok((name, value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_variables_read_through_and_empty_is_unset() {
        let env = Environment::of(|name| match name {
            "JWT_SECRET" => Some("s".into()),
            "SIGNING_SECRET" => Some("  ".into()),
            _ => None,
        });
        assert_eq!(env.get("JWT_SECRET").as_deref(), Some("s"));
        assert_eq!(env.get("SIGNING_SECRET"), None);
        assert_eq!(env.get("RUNPOD_API_KEY"), None);
    }
}
