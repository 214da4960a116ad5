//! Logging: `tracing`, JSON on Lambda, readable text elsewhere.

use tracing_subscriber::{fmt, EnvFilter};

/// Libraries kept at `warn` under a bare level of `info` or more: the
/// SDK's and the credential loader's chatter, and the runtime's own span
/// per invocation ("Lambda runtime invoke", requestId), which each
/// request's span already covers (it carries the request id, and the JSON
/// lines show only that innermost span) and which cost 2-5 % of a list's
/// CPU (BENCHMARKS.md, issue 15). Their warnings and errors still show; a
/// `RUST_LOG` that names one of them (`debug,aws_smithy_runtime=debug`)
/// decides for it.
const QUIET: &str =
    "aws_config=warn,aws_smithy_runtime=warn,aws_sdk_dynamodb=warn,lambda_runtime=warn";

/// The filter for `RUST_LOG` (`None`: unset): a bare level (the template's
/// `LogLevel`) with the [`QUIET`] libraries at `warn`, any other filter as
/// written.
fn filter_directives(rust_log: Option<&str>) -> String {
    let spec = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    let verbose = ["info", "debug", "trace"];
    if verbose.iter().any(|level| spec.eq_ignore_ascii_case(level)) {
        format!("{spec},{QUIET}")
    } else {
        spec.to_owned()
    }
}

/// Installs the global subscriber once; later calls do nothing. The level
/// comes from `RUST_LOG` (default `info`; see [`filter_directives`]). JSON
/// when Lambda's JSON log format is configured (`AWS_LAMBDA_LOG_FORMAT=JSON`)
/// or `LOG_FORMAT=json`.
pub fn init() {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::try_new(filter_directives(rust_log.as_deref()))
        .unwrap_or_else(|_| EnvFilter::new(filter_directives(None)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_keeps_the_libraries_quiet() {
        assert_eq!(filter_directives(None), format!("info,{QUIET}"));
        assert_eq!(filter_directives(Some("")), format!("info,{QUIET}"));
        assert_eq!(filter_directives(Some("debug")), format!("debug,{QUIET}"));
        assert_eq!(filter_directives(Some(" INFO ")), format!("INFO,{QUIET}"));
    }

    #[test]
    fn other_filters_are_taken_as_written() {
        // Below `warn` the libraries are as quiet as everything else.
        assert_eq!(filter_directives(Some("warn")), "warn");
        assert_eq!(filter_directives(Some("error")), "error");
        let own = "debug,aws_smithy_runtime=debug";
        assert_eq!(filter_directives(Some(own)), own);
    }
}
