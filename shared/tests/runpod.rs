//! The RunPod client against a wiremock RunPod, through the calls the
//! service makes: `submit` (`POST run`), `poll` (one `GET status`) and
//! `wait` (polling with growing delays until final or the wait ends).

use std::time::Duration;

use chat_shared::{
    catalogue::Catalogue,
    chat::Prompt,
    config::RunPodConfig,
    domain::Completion,
    domain::{Message, Role},
    runpod::{build_input, JobPoll, RunPodClient, RunPodError},
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

/// The endpoint every test's client calls.
const EP: &str = "ep1";

/// A job's input for one question, as the catalogue's default model
/// (`RUNPOD_ENDPOINT_ID` ep1, the messages format) builds it.
fn input() -> Value {
    input_with(&[])
}

/// The same, with the catalogue's variables `extra` set too.
fn input_with(extra: &[(&str, &str)]) -> Value {
    let history = vec![Message::new(
        Role::User,
        "How do I organize patient files?".into(),
        Utc::now(),
    )];
    let catalogue = Catalogue::from_lookup(&|k: &str| {
        let set = extra.iter().find(|(name, _)| *name == k);
        let value = set
            .map(|(_, v)| *v)
            .or((k == "RUNPOD_ENDPOINT_ID").then_some(EP));
        value.map(str::to_owned)
    })
    .unwrap();
    build_input(&Prompt::by_default(&catalogue, &history))
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

/// RunPod answers `run` with `answer`.
async fn run_answers(server: &MockServer, answer: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/ep1/run"))
        .respond_with(answer)
        .mount(server)
        .await;
}

/// RunPod answers `status` of job-1 with `answer`, `times` times (or always).
async fn status_answers(server: &MockServer, answer: ResponseTemplate, times: Option<u64>) {
    let mock = Mock::given(method("GET"))
        .and(path("/ep1/status/job-1"))
        .respond_with(answer);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

/// The reply of a final poll.
fn reply(poll: JobPoll) -> Result<Completion, RunPodError> {
    match poll {
        JobPoll::Done(result) => result,
        JobPoll::Running => panic!("the job is still running"),
    }
}

#[tokio::test]
async fn submit_posts_the_history_the_key_and_the_webhook() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/run"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(body_partial_json(json!({
            "input": {
                "messages": [{"role": "user", "content": "How do I organize patient files?"}],
                "sampling_params": {"max_tokens": 1024}
            },
            "webhook": "https://api.example/hook/t1"
        })))
        .respond_with(ok(job("IN_QUEUE")))
        .expect(1)
        .mount(&server)
        .await;
    let id = client(&server, &[])
        .submit(
            EP,
            input(),
            Some("https://api.example/hook/t1"),
            deadline(10),
        )
        .await
        .unwrap();
    assert_eq!(id, "job-1");
}

#[tokio::test]
async fn submit_without_a_webhook_sends_none() {
    let server = MockServer::start().await;
    run_answers(&server, ok(job("IN_QUEUE"))).await;
    client(&server, &[])
        .submit(EP, input(), None, deadline(10))
        .await
        .unwrap();
    let body: Value =
        serde_json::from_slice(&requests_to(&server, "/ep1/run").await[0].body).unwrap();
    assert!(body.get("webhook").is_none(), "{body}");
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/run"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0.3"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    run_answers(&server, ok(job("IN_QUEUE"))).await;
    let started = std::time::Instant::now();
    let id = client(&server, &[])
        .submit(EP, input(), None, deadline(10))
        .await
        .unwrap();
    assert_eq!(id, "job-1");
    assert_eq!(requests_to(&server, "/ep1/run").await.len(), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "Retry-After was not honoured"
    );
}

/// Issue 13: a 5xx arrives after the request did: the job may be queued,
/// and a second `run` could pay for it twice.
#[tokio::test]
async fn a_5xx_on_run_is_not_retried() {
    let server = MockServer::start().await;
    run_answers(
        &server,
        ResponseTemplate::new(500).set_body_string("worker pool exploded"),
    )
    .await;
    let err = client(&server, &[("RUNPOD_MAX_RETRIES", "2")])
        .submit(EP, input(), None, deadline(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunPodError::Status { status: 500, .. }),
        "{err:?}"
    );
    assert!(!err.is_timeout());
    assert_eq!(requests_to(&server, "/ep1/run").await.len(), 1);
}

#[tokio::test]
async fn persistent_5xx_on_status_exhaust_the_retries() {
    let server = MockServer::start().await;
    status_answers(&server, ResponseTemplate::new(503), None).await;
    let err = client(&server, &[("RUNPOD_MAX_RETRIES", "2")])
        .poll(EP, "job-1", deadline(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunPodError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(requests_to(&server, "/ep1/status/job-1").await.len(), 3);
}

/// Issue 13: a runaway worker's answer is refused, not read into memory.
#[tokio::test]
async fn an_answer_over_the_byte_cap_is_refused() {
    let server = MockServer::start().await;
    let huge = completed(json!("x".repeat(5_000)));
    status_answers(&server, ok(huge.clone()), None).await;
    let capped = client(&server, &[("RUNPOD_MAX_RESPONSE_BYTES", "4096")]);
    let err = capped.poll(EP, "job-1", deadline(10)).await.unwrap_err();
    assert!(
        matches!(&err, RunPodError::InvalidResponse(m) if m.contains("4096 bytes")),
        "{err:?}"
    );
    let roomy = client(&server, &[("RUNPOD_MAX_RESPONSE_BYTES", "8192")]);
    let text = reply(roomy.poll(EP, "job-1", deadline(10)).await.unwrap())
        .unwrap()
        .text;
    assert_eq!(text.len(), 5_000);
}

/// An error answer is read only as far as its start: one that claims 100 MB
/// and then stalls gives its first bytes at once, not a read that waits for
/// the rest until the request's timeout (and would hold what came).
#[tokio::test]
async fn an_error_answer_is_read_only_to_its_start() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let head = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 100000000\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(&[b'x'; 8192]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await; // the rest never comes
    });
    let server = MockServer::start().await;
    let err = client(&server, &[("RUNPOD_BASE_URL", &base)])
        .submit(EP, input(), None, deadline(10))
        .await
        .unwrap_err();
    let RunPodError::Status { status, body } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 500);
    assert!(body.starts_with("xxxxxxxxxx"), "{err:?}");
}

/// A job id RunPod never gives (a path, a query) never becomes part of a
/// URL: no request is made, and it is no such job.
#[tokio::test]
async fn a_job_id_runpod_never_gives_is_not_put_in_a_url() {
    let server = MockServer::start().await;
    let client = client(&server, &[]);
    for id in [
        "../../other-endpoint/status/x",
        "job?x=1",
        "",
        &"a".repeat(129),
    ] {
        let err = client.poll(EP, id, deadline(5)).await.unwrap_err();
        assert!(
            matches!(err, RunPodError::Status { status: 404, .. }),
            "{id:?}: {err:?}"
        );
        assert!(client.cancel(EP, id, deadline(5)).await.is_err(), "{id:?}");
    }
    let requests = server.received_requests().await.unwrap();
    assert!(requests.is_empty(), "{requests:?}");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = MockServer::start().await;
    run_answers(
        &server,
        ResponseTemplate::new(401).set_body_string("bad key"),
    )
    .await;
    let err = client(&server, &[])
        .submit(EP, input(), None, deadline(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunPodError::Status { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(requests_to(&server, "/ep1/run").await.len(), 1);
}

#[tokio::test]
async fn a_submission_that_times_out_is_not_sent_again() {
    let server = MockServer::start().await;
    run_answers(
        &server,
        ok(job("IN_QUEUE")).set_delay(Duration::from_secs(3)),
    )
    .await;
    let err = client(&server, &[])
        .submit(EP, input(), None, deadline(10))
        .await
        .unwrap_err();
    assert!(matches!(err, RunPodError::Transport(_)), "{err:?}");
    // The request may have started a job: a second one would pay twice.
    assert_eq!(requests_to(&server, "/ep1/run").await.len(), 1);
}

#[tokio::test]
async fn a_submission_past_the_deadline_is_a_timeout() {
    let server = MockServer::start().await;
    run_answers(
        &server,
        ok(job("IN_QUEUE")).set_delay(Duration::from_secs(5)),
    )
    .await;
    let err = client(&server, &[("RUNPOD_REQUEST_TIMEOUT_MS", "10000")])
        .submit(
            EP,
            input(),
            None,
            Instant::now() + Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(requests_to(&server, "/ep1/run").await.len(), 1);
}

#[tokio::test]
async fn poll_asks_once_and_reads_the_job() {
    let server = MockServer::start().await;
    status_answers(&server, ok(job("IN_PROGRESS")), Some(1)).await;
    Mock::given(method("GET"))
        .and(path("/ep1/status/job-1"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(ok(completed(json!({"text": "Done."}))))
        .mount(&server)
        .await;
    let c = client(&server, &[]);
    let first = c.poll(EP, "job-1", deadline(10)).await.unwrap();
    assert!(matches!(first, JobPoll::Running), "{first:?}");
    let second = reply(c.poll(EP, "job-1", deadline(10)).await.unwrap()).unwrap();
    assert_eq!(second.text, "Done.");
    assert_eq!(requests_to(&server, "/ep1/status/job-1").await.len(), 2);
}

#[tokio::test]
async fn a_job_runpod_no_longer_knows_is_a_404() {
    let server = MockServer::start().await;
    status_answers(&server, ResponseTemplate::new(404), None).await;
    let err = client(&server, &[])
        .poll(EP, "job-1", deadline(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RunPodError::Status { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn wait_polls_with_growing_delays_until_the_job_is_final() {
    let server = MockServer::start().await;
    status_answers(&server, ok(job("IN_QUEUE")), Some(1)).await;
    status_answers(&server, ok(job("IN_PROGRESS")), Some(2)).await;
    status_answers(&server, ok(completed(json!("Done."))), None).await;
    let started = std::time::Instant::now();
    let poll = client(&server, &[])
        .wait(EP, "job-1", deadline(10))
        .await
        .unwrap();
    assert_eq!(reply(poll).unwrap().text, "Done.");
    let calls = requests_to(&server, "/ep1/status/job-1").await;
    assert_eq!(calls.len(), 4);
    // Delays 20, 30, 40, 40 ms (x1.5 each time, capped at the 40 ms maximum).
    assert!(
        started.elapsed() >= Duration::from_millis(130),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn wait_leaves_a_running_job_at_the_end_of_the_wait() {
    let server = MockServer::start().await;
    status_answers(&server, ok(job("IN_PROGRESS")), None).await;
    let started = std::time::Instant::now();
    let poll = client(&server, &[])
        .wait(EP, "job-1", Instant::now() + Duration::from_millis(300))
        .await
        .unwrap();
    assert!(matches!(poll, JobPoll::Running), "{poll:?}");
    assert!(started.elapsed() < Duration::from_millis(400));
    assert!(requests_to(&server, "/ep1/status/job-1").await.len() >= 3);
    assert!(requests_to(&server, "/ep1/cancel/job-1").await.is_empty());
}

#[tokio::test]
async fn a_status_call_that_times_out_is_retried() {
    let server = MockServer::start().await;
    status_answers(
        &server,
        ok(job("IN_PROGRESS")).set_delay(Duration::from_secs(3)),
        Some(1),
    )
    .await;
    status_answers(&server, ok(completed(json!("late but fine"))), None).await;
    let poll = client(&server, &[])
        .poll(EP, "job-1", deadline(10))
        .await
        .unwrap();
    assert_eq!(reply(poll).unwrap().text, "late but fine");
    assert_eq!(requests_to(&server, "/ep1/status/job-1").await.len(), 2);
}

#[tokio::test]
async fn final_jobs_end_as_their_status_says() {
    for (final_job, check) in [
        (
            json!({"id": "job-1", "status": "FAILED", "error": "CUDA out of memory"}),
            (|e: &RunPodError| matches!(e, RunPodError::JobFailed { job_id, error } if job_id == "job-1" && error == "CUDA out of memory"))
                as fn(&RunPodError) -> bool,
        ),
        (job("CANCELLED"), |e| {
            matches!(e, RunPodError::JobCancelled { .. })
        }),
        (job("TIMED_OUT"), |e| e.is_timeout()),
    ] {
        let server = MockServer::start().await;
        status_answers(&server, ok(final_job), None).await;
        let poll = client(&server, &[])
            .poll(EP, "job-1", deadline(10))
            .await
            .unwrap();
        let err = reply(poll).unwrap_err();
        assert!(check(&err), "{err:?}");
    }
}

#[tokio::test]
async fn every_worker_output_shape_is_read() {
    for (output, text) in [
        (json!("plain"), "plain"),
        (json!({"text": "in text"}), "in text"),
        (json!({"text": ["a", "b"]}), "ab"),
        (
            json!({"choices": [{"message": {"content": "openai"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}),
            "openai",
        ),
        (
            json!([{"choices": [{"tokens": ["By patient, ", "then by date."]}], "usage": {"input": 9, "output": 6}}]),
            "By patient, then by date.",
        ),
        (
            json!([{"choices": [{"message": {"content": "vllm "}}]}, {"choices": [{"message": {"content": "chunks"}}]}]),
            "vllm chunks",
        ),
    ] {
        let server = MockServer::start().await;
        status_answers(&server, ok(completed(output)), None).await;
        let poll = client(&server, &[])
            .poll(EP, "job-1", deadline(10))
            .await
            .unwrap();
        assert_eq!(reply(poll).unwrap().text, text);
    }
}

#[tokio::test]
async fn garbage_answers_are_errors() {
    for body in [
        ResponseTemplate::new(200).set_body_string("<html>gateway</html>"),
        ok(json!({"status": "EXPLODED", "id": "job-1"})),
        ok(completed(json!({"unexpected": true}))),
        ok(json!({"id": "job-1", "status": "COMPLETED"})),
    ] {
        let server = MockServer::start().await;
        status_answers(&server, body, None).await;
        let err = match client(&server, &[]).poll(EP, "job-1", deadline(10)).await {
            Ok(poll) => reply(poll).unwrap_err(),
            Err(e) => e,
        };
        assert!(
            matches!(
                err,
                RunPodError::InvalidResponse(_) | RunPodError::Output { .. }
            ),
            "{err:?}"
        );
        assert!(!err.is_timeout());
    }
    let server = MockServer::start().await;
    run_answers(&server, ok(json!({"status": "IN_QUEUE"}))).await;
    let err = client(&server, &[])
        .submit(EP, input(), None, deadline(10))
        .await
        .unwrap_err();
    assert!(matches!(err, RunPodError::InvalidResponse(_)), "{err:?}");
}

#[tokio::test]
async fn prompt_format_and_system_prompt_are_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/ep1/run"))
        .and(body_partial_json(json!({"input": {
            "prompt": "Be brief.\n\nUser: How do I organize patient files?\n\nAssistant:"
        }})))
        .respond_with(ok(job("IN_QUEUE")))
        .expect(1)
        .mount(&server)
        .await;
    let input = input_with(&[
        ("RUNPOD_INPUT_FORMAT", "prompt"),
        ("SYSTEM_PROMPT", "Be brief."),
    ]);
    let c = client(&server, &[]);
    c.submit(EP, input, None, deadline(10)).await.unwrap();
}
