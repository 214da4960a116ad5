//! The local RunPod endpoint speaks the API the real client expects.

use crate::common;
use std::time::Duration;

use chat_service_dev::runpod_local::{LocalRunPod, Settings, DEV_REPLY_PREFIX};
use chat_shared::{
    domain::{Completion, Usage, UsageSum},
    runpod::{JobPoll, RunPodClient, RunPodError},
};
use serde_json::{json, Value};
use tokio::time::Instant;

async fn start(settings: Settings) -> (LocalRunPod, String) {
    let rp = LocalRunPod::new(Settings {
        api_key: Some("test-runpod-key".into()),
        ..settings
    });
    let url = rp.clone().spawn().await;
    (rp, url)
}

/// The service's RunPod client, pointed at the local endpoint.
fn client_of(url: &str) -> RunPodClient {
    RunPodClient::new(common::runpod_config(url, &[])).unwrap()
}

/// The endpoint id the clients call (the local endpoint serves any).
const EP: &str = "test-endpoint";

/// A job's input for one question, in the vLLM worker's messages format.
fn input(text: &str) -> Value {
    json!({
        "messages": [{"role": "user", "content": text}],
        "sampling_params": {"max_tokens": 1024}
    })
}

/// `input` for a job read with `stream`.
fn streamed(mut input: Value) -> Value {
    input["stream"] = json!(true);
    input
}

fn secs(n: u64) -> Instant {
    Instant::now() + Duration::from_secs(n)
}

/// What a send does: submit the job, then wait for it until `until`.
async fn generate(
    client: &RunPodClient,
    text: &str,
    until: Instant,
) -> Option<Result<Completion, RunPodError>> {
    let job = client.submit(EP, input(text), None, until).await.unwrap();
    match client.wait(EP, &job, until).await.unwrap() {
        JobPoll::Done(result) => Some(result),
        JobPoll::Running => None,
    }
}

async fn call(url: &str, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut req = http
        .request(method.parse().unwrap(), format!("{url}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A `GET /ep/{route}/{job}` with the right key: `status` or `stream`.
async fn look(url: &str, route: &str, job: &str) -> (u16, Value) {
    let path = format!("/ep/{route}/{job}");
    call(url, "GET", &path, "test-runpod-key", None).await
}

#[tokio::test]
async fn the_client_gets_a_labelled_development_reply() {
    let (_, url) = start(Settings::default()).await;
    let client = client_of(&url);
    let reply = generate(&client, "How do I organize patient files?", secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.text.starts_with(DEV_REPLY_PREFIX), "{}", reply.text);
    assert!(reply.text.contains("How do I organize patient files?"));
    assert!(reply.usage.is_some());
}

#[tokio::test]
async fn queued_jobs_are_polled_through_to_completion() {
    let (rp, url) = start(Settings {
        queue_delay: Duration::from_millis(300),
        execution_time: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let (status, job) = call(
        &url,
        "POST",
        "/ep/run",
        "test-runpod-key",
        Some(json!({"input": {"prompt": "hi"}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "IN_QUEUE");
    let id = job["id"].as_str().unwrap();
    let mut seen = vec![];
    for _ in 0..50 {
        let (_, j) = look(&url, "status", id).await;
        let s = j["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if s == "COMPLETED" {
            assert!(j["output"][0]["choices"][0]["tokens"][0]
                .as_str()
                .unwrap()
                .starts_with(DEV_REPLY_PREFIX));
            let (_, stream) = look(&url, "stream", id).await;
            assert_eq!(stream["stream"].as_array().unwrap().len(), 1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]);
    assert_eq!(rp.submitted(), 1);
}

#[tokio::test]
async fn wrong_key_missing_job_and_bad_input_are_refused() {
    let (_, url) = start(Settings::default()).await;
    let (status, _) = call(&url, "POST", "/ep/run", "wrong", Some(json!({"input": {}}))).await;
    assert_eq!(status, 401);
    let (status, _) = call(&url, "GET", "/ep/status/nope", "test-runpod-key", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &url,
        "POST",
        "/ep/run",
        "test-runpod-key",
        Some(json!({"prompt": "no input"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, health) = call(&url, "GET", "/ep/health", "test-runpod-key", None).await;
    assert_eq!(status, 200);
    assert!(health["jobs"]["completed"].is_number());
}

/// The error a generation ends with on an endpoint with `settings`.
async fn failure_with(settings: Settings) -> RunPodError {
    let (_, url) = start(settings).await;
    let client = client_of(&url);
    let outcome = generate(&client, "hi", secs(10)).await;
    outcome.expect("a final status").unwrap_err()
}

#[tokio::test]
async fn failures_and_scripted_statuses_reach_the_client() {
    let err = failure_with(Settings {
        failure_rate: 1.0,
        ..Settings::default()
    })
    .await;
    assert!(matches!(err, RunPodError::JobFailed { .. }), "{err:?}");

    let sequence = ["IN_QUEUE", "IN_PROGRESS", "IN_PROGRESS", "TIMED_OUT"];
    let err = failure_with(Settings {
        status_sequence: Some(sequence.map(String::from).to_vec()),
        ..Settings::default()
    })
    .await;
    assert!(matches!(err, RunPodError::JobTimedOut { .. }), "{err:?}");
}

#[tokio::test]
async fn a_held_job_outlasts_the_wait_and_completes_when_released() {
    let (rp, url) = start(Settings {
        hold: true,
        ..Settings::default()
    })
    .await;
    let client = client_of(&url);
    let job = client
        .submit(EP, input("hi"), None, secs(10))
        .await
        .unwrap();
    let wait = client.wait(EP, &job, Instant::now() + Duration::from_millis(500));
    assert!(matches!(wait.await.unwrap(), JobPoll::Running));
    rp.release(Some(&job));
    let JobPoll::Done(reply) = client.wait(EP, &job, secs(10)).await.unwrap() else {
        panic!("the released job did not finish")
    };
    assert!(reply.unwrap().text.starts_with(DEV_REPLY_PREFIX));
    assert_eq!(rp.submitted(), 1);
}

#[tokio::test]
async fn results_expire() {
    let (_, url) = start(Settings {
        result_ttl: Duration::from_millis(200),
        execution_time: Duration::ZERO,
        ..Settings::default()
    })
    .await;
    let client = client_of(&url);
    let id = client
        .submit(EP, input("hi"), None, secs(10))
        .await
        .unwrap();
    let done = client.wait(EP, &id, secs(10)).await.unwrap();
    assert!(matches!(done, JobPoll::Done(Ok(_))), "{done:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _) = look(&url, "status", &id).await;
    assert_eq!(status, 404);
}

/// The local endpoint streams usage as the vLLM worker does, running
/// totals on every chunk; the relay's way (every `stream` call's chunks)
/// and the poll's (the final output, every chunk) both count it once.
#[tokio::test]
async fn a_streamed_jobs_running_totals_are_counted_once_both_ways() {
    let (_, url) = start(Settings {
        execution_time: Duration::from_millis(400),
        ..Settings::default()
    })
    .await;
    let client = client_of(&url);
    let text = "How do I organize patient files by date and by doctor?";
    let job = client
        .submit(EP, streamed(input(text)), None, secs(10))
        .await
        .unwrap();
    let (mut relayed, mut calls, mut chunks) = (UsageSum::default(), 0, 0);
    loop {
        let step = client.stream(EP, &job, secs(10)).await.unwrap();
        chunks += step.pieces.len();
        relayed.add(step.usage);
        calls += 1;
        if step.end.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let reply_words = format!("{DEV_REPLY_PREFIX} You said: {text}")
        .split_whitespace()
        .count() as u64;
    let whole = Usage {
        input_tokens: text.split_whitespace().count() as u64,
        output_tokens: reply_words,
    };
    assert!(chunks > 10 && calls > 3, "{chunks} chunks in {calls} calls");
    assert_eq!(relayed.total(), Some(whole), "relayed");
    let JobPoll::Done(polled) = client.wait(EP, &job, secs(10)).await.unwrap() else {
        panic!("the job is final")
    };
    assert_eq!(polled.unwrap().usage, Some(whole), "polled");
}

/// A webhook URL: the runsync jobs below have one (nothing listens; the
/// local endpoint's deliveries fail quietly).
const HOOK: Option<&str> = Some("http://127.0.0.1:9/webhook");

/// `runsync` as RunPod documents it ("Operation reference", /runsync): the
/// call holds until the job ends and answers with its output at once (no
/// `status` call), and a `wait` outside 1 000–300 000 ms is a 400.
#[tokio::test]
async fn runsync_answers_as_soon_as_the_job_ends() {
    let (rp, url) = start(Settings {
        execution_time: Duration::from_millis(400),
        ..Settings::default()
    })
    .await;
    let client = client_of(&url);
    let t = Instant::now();
    let (id, poll) = client
        .submit_and_wait(EP, input("hi"), HOOK, secs(10), secs(12))
        .await
        .unwrap();
    let took = t.elapsed();
    let reply = match poll {
        Ok(JobPoll::Done(Ok(reply))) => reply,
        other => panic!("{other:?}"),
    };
    assert!(reply.text.starts_with(DEV_REPLY_PREFIX));
    assert!(id.starts_with("sync-"), "{id}");
    // The job ran 400 ms; the answer came right after it, not at a poll.
    let ended = rp.newest_end().unwrap().into_std();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(
        Instant::now().into_std() - ended < Duration::from_millis(100),
        "answered {:?} after the job ended",
        Instant::now().into_std() - ended
    );
    assert_eq!((rp.submitted(), rp.status_calls()), (1, 0));

    for wait in ["999", "300001", "soon"] {
        let path = format!("/ep/runsync?wait={wait}");
        let body = json!({"input": input("hi")});
        let (status, body) = call(&url, "POST", &path, "test-runpod-key", Some(body)).await;
        assert_eq!(status, 400, "wait={wait}: {body}");
        assert!(body["error"].as_str().unwrap().contains("wait is invalid"));
    }
    assert_eq!(rp.submitted(), 1, "a refused runsync queues nothing");
}

/// A job that outlasts the wait is answered running, keeps running, and
/// its result is kept one minute (here 300 ms) after it ends, where a
/// `run` job's is kept 30 minutes.
#[tokio::test]
async fn a_runsync_job_outlasting_the_wait_runs_on_and_is_kept_less_long() {
    let (rp, url) = start(Settings {
        execution_time: Duration::from_millis(1_500),
        sync_result_ttl: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let client = client_of(&url);
    let t = Instant::now();
    let until = t + Duration::from_millis(1_100);
    let (id, poll) = client
        .submit_and_wait(EP, input("hi"), HOOK, until, secs(10))
        .await
        .unwrap();
    assert!(matches!(poll, Ok(JobPoll::Running)), "{poll:?}");
    assert!(id.starts_with("sync-"), "{id}");
    // Held until the wait ended (about 1.1 s), the job still running.
    assert!(
        t.elapsed() >= Duration::from_millis(1_000),
        "{:?}",
        t.elapsed()
    );
    assert!(rp.newest_end().is_none());
    let done = client.wait(EP, &id, secs(5)).await.unwrap();
    assert!(matches!(done, JobPoll::Done(Ok(_))), "{done:?}");
    let status_of = |id: String| {
        let url = url.clone();
        async move {
            let path = format!("/{EP}/status/{id}");
            call(&url, "GET", &path, "test-runpod-key", None).await.0
        }
    };
    assert_eq!(status_of(id.clone()).await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of(id).await, 404, "a runsync result expires");

    // Without a webhook to read it in time, or with less than the
    // shortest wait left, the job goes to `run`, whose result is kept.
    for (hook, until) in [(None, secs(10)), (HOOK, Instant::now())] {
        let (id, poll) = client
            .submit_and_wait(EP, input("hi"), hook, until, secs(10))
            .await
            .unwrap();
        assert!(id.starts_with("local-"), "{id}");
        if matches!(poll, Ok(JobPoll::Running)) {
            client.wait(EP, &id, secs(5)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(status_of(id).await, 200, "a run result is kept");
    }
    assert_eq!(rp.submitted(), 3);
}
