//! The RunPod client against a wiremock RunPod.

use std::time::Duration;

use chat_shared::{
    config::RunPodConfig,
    domain::{Message, Role},
    runpod::{RunPodClient, RunPodError},
};
use chrono::Utc;
use serde_json::{json, Value};
use tokio::time::Instant;
use wiremock::{
    matchers::{body_partial_json, header, method, path},
    Mock, MockServer, Request, ResponseTemplate,
};

const KEY: &str = "rp-test-key";

fn client(server: &MockServer, extra: &[(&str, &str)]) -> RunPodClient {
    let base = server.uri();
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = RunPodConfig::from_lookup(move |k| {
        if let Some((_, v)) = extra.iter().find(|(n, _)| n == k) {
            return Some(v.clone());
        }
        Some(
            match k {
                "RUNPOD_BASE_URL" => base.as_str(),
                "RUNPOD_ENDPOINT_ID" => "ep1",
                "RUNPOD_API_KEY" => KEY,
                "RUNPOD_RETRY_BASE_MS" => "10",
                "RUNPOD_POLL_INITIAL_MS" => "20",
                "RUNPOD_POLL_MAX_MS" => "40",
                "RUNPOD_REQUEST_TIMEOUT_MS" => "500",
                _ => return None,
            }
            .to_owned(),
        )
    })
    .unwrap();
    RunPodClient::new(config).unwrap()
}

fn history() -> Vec<Message> {
    vec![Message::new(
        Role::User,
        "How do I organize patient files?".into(),
        Utc::now(),
    )]
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

fn job(status: &str) -> Value {
    json!({"id": "job-1", "status": status})
}

fn completed(output: Value) -> Value {
    json!({"id": "job-1", "status": "COMPLETED", "output": output})
}

async fn requests_to(server: &MockServer, p: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

#[tokio::test]
async fn runsync_completed_returns_the_reply() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(body_partial_json(json!({"input": {
            "messages": [{"role": "user", "content": "How do I organize patient files?"}],
            "sampling_params": {"max_tokens": 1024}
        }})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completed(json!([
            {"choices": [{"tokens": ["By patient, ", "then by date."]}], "usage": {"input": 9, "output": 6}}
        ]))))
        .expect(1)
        .mount(&server)
        .await;
    let reply = client(&server, &[])
        .generate(&history(), deadline(10))
        .await
        .unwrap();
    assert_eq!(reply.text, "By patient, then by date.");
    assert_eq!(reply.usage.unwrap().output_tokens, 6);
    let sent = requests_to(&server, "/ep1/runsync").await;
    let wait: u64 = sent[0]
        .url
        .query_pairs()
        .find(|(k, _)| k == "wait")
        .map(|(_, v)| v.parse().unwrap())
        .expect("runsync carries ?wait=");
    assert!((1_000..=10_000).contains(&wait), "wait={wait}");
}

#[tokio::test]
async fn a_queued_job_is_polled_until_complete() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("IN_QUEUE")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ep1/status/job-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("IN_QUEUE")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ep1/status/job-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("IN_PROGRESS")))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ep1/status/job-1"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(completed(json!({"text": "Done."}))))
        .mount(&server)
        .await;
    let reply = client(&server, &[])
        .generate(&history(), deadline(10))
        .await
        .unwrap();
    assert_eq!(reply.text, "Done.");
    assert_eq!(requests_to(&server, "/ep1/status/job-1").await.len(), 4);
    assert!(requests_to(&server, "/ep1/cancel/job-1").await.is_empty());
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0.3"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completed(json!("ok"))))
        .mount(&server)
        .await;
    let started = std::time::Instant::now();
    let reply = client(&server, &[])
        .generate(&history(), deadline(10))
        .await
        .unwrap();
    assert_eq!(reply.text, "ok");
    assert_eq!(requests_to(&server, "/ep1/runsync").await.len(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "Retry-After was not honoured"
    );
}

#[tokio::test]
async fn persistent_500s_exhaust_the_retries() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .respond_with(ResponseTemplate::new(500).set_body_string("worker pool exploded"))
        .mount(&server)
        .await;
    let err = client(&server, &[("RUNPOD_MAX_RETRIES", "2")])
        .generate(&history(), deadline(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunPodError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert!(!err.is_timeout());
    assert_eq!(requests_to(&server, "/ep1/runsync").await.len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .respond_with(ResponseTemplate::new(401).set_body_string("bad key"))
        .mount(&server)
        .await;
    let err = client(&server, &[])
        .generate(&history(), deadline(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunPodError::Status { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(requests_to(&server, "/ep1/runsync").await.len(), 1);
}

#[tokio::test]
async fn a_failed_job_surfaces_its_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": "job-1", "status": "FAILED", "error": "CUDA out of memory"}),
        ))
        .mount(&server)
        .await;
    let err = client(&server, &[])
        .generate(&history(), deadline(10))
        .await
        .unwrap_err();
    match err {
        RunPodError::JobFailed { job_id, error } => {
            assert_eq!(job_id, "job-1");
            assert_eq!(error, "CUDA out of memory");
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn at_the_deadline_the_job_is_cancelled() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("IN_QUEUE")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ep1/status/job-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("IN_PROGRESS")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/ep1/cancel/job-1"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("CANCELLED")))
        .expect(1)
        .mount(&server)
        .await;
    let started = std::time::Instant::now();
    let err = client(&server, &[])
        .generate(&history(), Instant::now() + Duration::from_millis(600))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunPodError::Deadline { job_id: Some(ref id) } if id == "job-1"),
        "{err:?}"
    );
    assert!(err.is_timeout());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(requests_to(&server, "/ep1/status/job-1").await.len() >= 2);
}

#[tokio::test]
async fn a_runsync_that_hangs_past_the_deadline_is_a_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(job("IN_QUEUE"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let err = client(&server, &[])
        .generate(&history(), Instant::now() + Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // A timed-out submission is not sent again: it may have started a job.
    assert_eq!(requests_to(&server, "/ep1/runsync").await.len(), 1);
}

#[tokio::test]
async fn a_status_call_that_times_out_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .respond_with(ResponseTemplate::new(200).set_body_json(job("IN_PROGRESS")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ep1/status/job-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(job("IN_PROGRESS"))
                .set_delay(Duration::from_secs(3)),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ep1/status/job-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completed(json!("late but fine"))))
        .mount(&server)
        .await;
    let reply = client(&server, &[])
        .generate(&history(), deadline(10))
        .await
        .unwrap();
    assert_eq!(reply.text, "late but fine");
}

#[tokio::test]
async fn garbage_answers_are_errors() {
    for body in [
        ResponseTemplate::new(200).set_body_string("<html>gateway</html>"),
        ResponseTemplate::new(200).set_body_json(json!({"status": "EXPLODED", "id": "job-1"})),
        ResponseTemplate::new(200).set_body_json(completed(json!({"unexpected": true}))),
        ResponseTemplate::new(200).set_body_json(json!({"id": "job-1", "status": "COMPLETED"})),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/ep1/runsync"))
            .respond_with(body)
            .mount(&server)
            .await;
        let err = client(&server, &[])
            .generate(&history(), deadline(10))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                RunPodError::InvalidResponse(_) | RunPodError::Output { .. }
            ),
            "{err:?}"
        );
        assert!(!err.is_timeout());
    }
}

#[tokio::test]
async fn prompt_format_and_system_prompt_are_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/runsync"))
        .and(body_partial_json(json!({"input": {
            "prompt": "Be brief.\n\nUser: How do I organize patient files?\n\nAssistant:"
        }})))
        .respond_with(ResponseTemplate::new(200).set_body_json(completed(json!("ok"))))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(
        &server,
        &[
            ("RUNPOD_INPUT_FORMAT", "prompt"),
            ("SYSTEM_PROMPT", "Be brief."),
        ],
    );
    let reply = c.generate(&history(), deadline(10)).await.unwrap();
    assert_eq!(reply.text, "ok");
}
