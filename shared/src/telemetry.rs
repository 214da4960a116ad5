//! Logging: `tracing`, JSON on Lambda, readable text elsewhere.

use tracing_subscriber::{fmt, EnvFilter};

const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_dynamodb=warn";

/// Installs the global subscriber once; later calls do nothing. The level
/// comes from `RUST_LOG` (default `info`). JSON when Lambda's JSON log format
/// is configured (`AWS_LAMBDA_LOG_FORMAT=JSON`) or `LOG_FORMAT=json`.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = ["AWS_LAMBDA_LOG_FORMAT", "LOG_FORMAT"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|f| f.eq_ignore_ascii_case("json")));
    let builder = fmt().with_env_filter(filter).with_target(false);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .without_time()
            .try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
}
