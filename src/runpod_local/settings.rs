//! What the local endpoint does: its key, its timing and its faults, read
//! from `RUNPOD_LOCAL_*` variables (the README's table) or set by a test.

use std::{str::FromStr, time::Duration};

use chat_shared::catalogue::Catalogue;

/// Marks every reply of the development responder, so nobody mistakes it
/// for a model's answer.
pub const DEV_REPLY_PREFIX: &str = "[local development responder: no AI model was called]";

/// Where answers come from.
#[derive(Debug, Clone)]
pub enum Responder {
    /// Echoes the last user message behind [`DEV_REPLY_PREFIX`].
    Development,
    /// Forwards to `{base_url}/chat/completions` (OpenAI-compatible).
    OpenAi {
        /// The server's base URL, without a trailing `/`.
        base_url: String,
        /// The `model` field of each request.
        model: String,
        /// Sent as a Bearer token when set.
        api_key: Option<String>,
    },
}

/// The endpoint's behaviour; [`Settings::default`] answers quickly and never fails.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Required Bearer key; `None` accepts any key (but still requires one).
    pub api_key: Option<String>,
    /// Only these endpoint ids are served; `None` serves any. From
    /// `RUNPOD_MODELS` (every model's `endpoint_id`), else `RUNPOD_ENDPOINT_ID`.
    pub endpoint_ids: Option<Vec<String>>,
    /// Time a job spends `IN_QUEUE`.
    pub queue_delay: Duration,
    /// Time a job spends `IN_PROGRESS` (at least the responder's own time).
    pub execution_time: Duration,
    /// Jobs running longer than this end `TIMED_OUT`.
    pub execution_timeout: Option<Duration>,
    /// Share of jobs that end `FAILED` (0.0 to 1.0).
    pub failure_rate: f64,
    /// When set, each `status` call of a job answers the next status of
    /// this list (the last one repeats) instead of following the clock.
    pub status_sequence: Option<Vec<String>>,
    /// Jobs stay `IN_PROGRESS` until `POST /_control/release/{job_id}`.
    pub hold: bool,
    /// For this long after the endpoint starts, `run` and `runsync` answer `429 Too Many
    /// Requests` with `Retry-After: 5` and queues nothing: the endpoint's
    /// `run` rate limit reached (RunPod's docs, "Send API requests": per
    /// endpoint, `run` 1 000 requests / 10 s; past it, 429).
    pub run_throttle: Duration,
    /// How long a final `run` job's result stays readable (RunPod: 30 min).
    pub result_ttl: Duration,
    /// How long a final `runsync` job's result stays readable (RunPod's
    /// docs, "Operation reference", /runsync: "Result retention: 1 minute
    /// after completion").
    pub sync_result_ttl: Duration,
    /// Pause between webhook delivery attempts (RunPod: 10 s).
    pub webhook_retry_delay: Duration,
    /// Where answers come from.
    pub responder: Responder,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            api_key: None,
            endpoint_ids: None,
            queue_delay: Duration::ZERO,
            execution_time: Duration::from_millis(50),
            execution_timeout: None,
            failure_rate: 0.0,
            status_sequence: None,
            hold: false,
            run_throttle: Duration::ZERO,
            result_ttl: Duration::from_secs(30 * 60),
            sync_result_ttl: Duration::from_secs(60),
            webhook_retry_delay: Duration::from_secs(10),
            responder: Responder::Development,
        }
    }
}

impl Settings {
    /// From the process's `RUNPOD_LOCAL_*` variables.
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(&Vars::process())
    }

    /// From `vars`; every error names the variable it comes from.
    pub fn from_vars(vars: &Vars) -> Result<Self, String> {
        let ms = |name| vars.number(name).map(|v| v.map(Duration::from_millis));
        Ok(Self {
            api_key: vars.text("RUNPOD_API_KEY"),
            endpoint_ids: endpoint_ids(vars)?,
            queue_delay: ms("RUNPOD_LOCAL_QUEUE_MS")?.unwrap_or_default(),
            execution_time: ms("RUNPOD_LOCAL_EXEC_MS")?.unwrap_or(Duration::from_millis(300)),
            execution_timeout: ms("RUNPOD_LOCAL_EXECUTION_TIMEOUT_MS")?,
            failure_rate: vars.number("RUNPOD_LOCAL_FAILURE_RATE")?.unwrap_or(0.0),
            status_sequence: vars
                .text("RUNPOD_LOCAL_STATUS_SEQUENCE")
                .map(|s| s.split(',').map(|p| p.trim().to_owned()).collect()),
            hold: vars
                .text("RUNPOD_LOCAL_HOLD")
                .is_some_and(|v| v == "1" || v == "true"),
            run_throttle: ms("RUNPOD_LOCAL_RUN_THROTTLE_MS")?.unwrap_or_default(),
            result_ttl: Duration::from_secs(
                vars.number("RUNPOD_LOCAL_RESULT_TTL_SECS")?
                    .unwrap_or(30 * 60),
            ),
            sync_result_ttl: Duration::from_secs(
                vars.number("RUNPOD_LOCAL_SYNC_RESULT_TTL_SECS")?
                    .unwrap_or(60),
            ),
            webhook_retry_delay: Duration::from_secs(10),
            responder: Responder::from_vars(vars),
        })
    }
}

/// The endpoint ids the service's catalogue names, read as the service
/// reads it ([`Catalogue`]): one endpoint per model of `RUNPOD_MODELS`, or
/// `RUNPOD_ENDPOINT_ID` alone.
fn endpoint_ids(vars: &Vars) -> Result<Option<Vec<String>>, String> {
    if vars.text("RUNPOD_MODELS").is_none() {
        return Ok(vars.text("RUNPOD_ENDPOINT_ID").map(|id| vec![id]));
    }
    let catalogue =
        Catalogue::from_lookup(&|name: &str| vars.text(name)).map_err(|e| e.to_string())?;
    Ok(Some(
        catalogue
            .models()
            .iter()
            .map(|m| m.endpoint_id.clone())
            .collect(),
    ))
}

impl Responder {
    fn from_vars(vars: &Vars) -> Self {
        match vars.text("RUNPOD_LOCAL_OPENAI_URL") {
            Some(base_url) => Responder::OpenAi {
                base_url: base_url.trim_end_matches('/').to_owned(),
                model: vars
                    .text("RUNPOD_LOCAL_OPENAI_MODEL")
                    .unwrap_or_else(|| "default".into()),
                api_key: vars.text("RUNPOD_LOCAL_OPENAI_KEY"),
            },
            None => Responder::Development,
        }
    }
}

/// Configuration variables: the process's, or a test's.
pub enum Vars {
    /// The process's environment.
    Process,
    /// Fixed pairs, for tests.
    Fixed(Vec<(String, String)>),
}

impl Vars {
    /// The process's environment.
    pub fn process() -> Self {
        Self::Process
    }

    /// Fixed pairs, for tests.
    pub fn of(pairs: &[(&str, &str)]) -> Self {
        Self::Fixed(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<String> {
        match self {
            Self::Process => std::env::var(name).ok(),
            Self::Fixed(pairs) => pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone()),
        }
    }

    /// The variable's value; blank counts as unset.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }

    /// The variable as a number; an error names the variable and the value.
    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.text(name)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|e| format!("{name}={v:?} is not a valid number: {e}"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_give_the_defaults() {
        let s = Settings::from_vars(&Vars::of(&[("RUNPOD_LOCAL_EXEC_MS", " ")])).unwrap();
        assert_eq!(s.execution_time, Duration::from_millis(300));
        assert_eq!(s.execution_timeout, None);
        assert_eq!(s.failure_rate, 0.0);
        assert!(matches!(s.responder, Responder::Development));
    }

    #[test]
    fn the_catalogues_endpoints_are_served() {
        let models = r#"[
            {"id": "a", "endpoint_id": "ep-a", "context_tokens": 100, "max_output_tokens": 10, "default": true},
            {"id": "b", "endpoint_id": "ep-b", "context_tokens": 100, "max_output_tokens": 10}
        ]"#;
        let vars = [("RUNPOD_MODELS", models), ("RUNPOD_ENDPOINT_ID", "ignored")];
        let s = Settings::from_vars(&Vars::of(&vars)).unwrap();
        assert_eq!(
            s.endpoint_ids,
            Some(vec!["ep-a".to_owned(), "ep-b".to_owned()])
        );
        let s = Settings::from_vars(&Vars::of(&[("RUNPOD_ENDPOINT_ID", "one")])).unwrap();
        assert_eq!(s.endpoint_ids, Some(vec!["one".to_owned()]));
        assert_eq!(
            Settings::from_vars(&Vars::of(&[])).unwrap().endpoint_ids,
            None
        );
        let broken = Settings::from_vars(&Vars::of(&[("RUNPOD_MODELS", "[]")]));
        assert!(broken.unwrap_err().contains("RUNPOD_MODELS"));
    }

    #[test]
    fn numbers_are_read_from_their_variables() {
        let s = Settings::from_vars(&Vars::of(&[
            ("RUNPOD_LOCAL_QUEUE_MS", "20"),
            ("RUNPOD_LOCAL_EXECUTION_TIMEOUT_MS", "1500"),
            ("RUNPOD_LOCAL_FAILURE_RATE", "0.25"),
            ("RUNPOD_LOCAL_RESULT_TTL_SECS", "7"),
            ("RUNPOD_LOCAL_STATUS_SEQUENCE", "IN_QUEUE, FAILED"),
            ("RUNPOD_LOCAL_RUN_THROTTLE_MS", "40000"),
        ]))
        .unwrap();
        assert_eq!(s.queue_delay, Duration::from_millis(20));
        assert_eq!(s.run_throttle, Duration::from_secs(40));
        assert_eq!(s.execution_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(s.failure_rate, 0.25);
        assert_eq!(s.result_ttl, Duration::from_secs(7));
        assert_eq!(
            s.status_sequence,
            Some(vec!["IN_QUEUE".into(), "FAILED".into()])
        );
    }

    #[test]
    fn every_bad_number_names_its_variable() {
        for name in [
            "RUNPOD_LOCAL_QUEUE_MS",
            "RUNPOD_LOCAL_EXEC_MS",
            "RUNPOD_LOCAL_EXECUTION_TIMEOUT_MS",
            "RUNPOD_LOCAL_FAILURE_RATE",
            "RUNPOD_LOCAL_RESULT_TTL_SECS",
            "RUNPOD_LOCAL_RUN_THROTTLE_MS",
        ] {
            let err = Settings::from_vars(&Vars::of(&[(name, "soon")])).unwrap_err();
            assert!(err.starts_with(&format!("{name}=\"soon\"")), "{err}");
        }
    }
}
