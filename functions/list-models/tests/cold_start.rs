//! A catalogue that breaks a rule stops the function at its cold start,
//! with one line naming the entry and the rule, before it serves anything
//! (never a 500 per request): the real binary, as Lambda starts it.

use std::process::Command;

const CATALOGUE: &str = r#"[
  {"id": "small", "endpoint_id": "ep-small", "context_tokens": 2048, "max_output_tokens": 256, "default": true},
  {"id": "large", "endpoint_id": "ep-large", "context_tokens": 4096, "max_output_tokens": 1024}
]"#;

/// What the binary printed (stdout and stderr) when started with `models`;
/// it must have exited with a failure.
fn start(models: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_list-models"))
        .env_clear()
        .envs([
            ("TABLE_NAME", "t"),
            ("JWT_SECRET", "a-test-secret-of-at-least-32-characters"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            // Nothing listens here: a function that started would fail
            // otherwise, asking the runtime API for its first event.
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9"),
            ("RUNPOD_MODELS", models),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    log
}

#[test]
fn a_broken_catalogue_stops_the_function_at_its_cold_start() {
    let log = start(&CATALOGUE.replace(r#""default": true"#, r#""default": false"#));
    let refused = "the configuration is refused";
    assert!(
        log.contains(refused) && log.contains("RUNPOD_MODELS"),
        "{log}"
    );
    assert!(log.contains("exactly one model must be"), "{log}");
    let log = start(&CATALOGUE.replace(r#""id": "large""#, r#""id": "Large Model""#));
    assert!(
        log.contains("entry 1") && log.contains("Large Model"),
        "{log}"
    );
    assert!(log.contains("id must be 1 to 64"), "{log}");
}
