//! The streamed send's first bytes against a RunPod whose `run` answers 429
//! (with `Retry-After`) for 40 s: the client must hear the stream start and
//! `message.created` at once, and a keep-alive at least every 15 s, or a
//! proxy in front (CloudFront's origin read timeout is 30 s) cuts it with a
//! 504 while the question is stored and the job queued.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chat_service_dev::{
    apigw::Event,
    runpod_local::{LocalRunPod, Settings},
};
use chat_shared::{http, runpod::RunPodClient, App};
use http_body_util::BodyExt;

use crate::common;

#[tokio::test]
async fn a_throttled_run_still_starts_the_stream_at_once_and_keeps_it_alive() {
    let runpod = LocalRunPod::new(Settings {
        api_key: Some("test-runpod-key".into()),
        run_throttle: Duration::from_secs(40),
        execution_time: Duration::from_millis(300),
        ..Settings::default()
    });
    let url = runpod.clone().spawn().await;
    let client = common::dynamo().await;
    let table = common::fresh_table(&client).await;
    // Time for the 40 s of 429s (the Lambda's 300 s, less its margin).
    let config = common::config_with(&table, &[("REQUEST_BUDGET_SECS", "120")]);
    let retries = [("RUNPOD_MAX_RETRIES", "30")];
    let model = RunPodClient::new(common::runpod_config(&url, &retries)).unwrap();
    let app = Arc::new(App::new(config, client).with_model(model));

    let body = r#"{"message": "How do I organize patient files?"}"#;
    let token = Some(common::token("alice"));
    let asked = Instant::now();
    let resp = http::stream_message(app, Event::send_stream(body, token).request()).await;
    let head_at = asked.elapsed();
    assert_eq!(resp.status(), 200);
    assert!(
        head_at < Duration::from_secs(2),
        "the head after {head_at:?}"
    );

    let mut body = resp.into_body();
    let mut frames: Vec<(Duration, String)> = vec![];
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        frames.push((asked.elapsed(), String::from_utf8(data.to_vec()).unwrap()));
    }
    let (created_at, created) = &frames[0];
    assert!(
        created.starts_with("id: 0\nevent: message.created\n"),
        "{frames:?}"
    );
    assert!(created.contains("\"conversation_id\":\""), "{created}");
    assert!(
        *created_at < Duration::from_secs(2),
        "created after {created_at:?}"
    );
    let mut last = Duration::ZERO;
    for (at, frame) in &frames {
        assert!(
            *at - last <= Duration::from_secs(15),
            "nothing from {last:?} to {at:?} (then {frame:?})"
        );
        last = *at;
    }
    let keep_alives = frames
        .iter()
        .filter(|(_, f)| f == ": keep-alive\n\n")
        .count();
    assert!(
        keep_alives >= 3,
        "{keep_alives} keep-alives over 40 s: {frames:?}"
    );
    let (_, end) = frames.last().unwrap();
    assert!(end.contains("\nevent: message.completed\n"), "{frames:?}");
    assert!(
        runpod.throttled_runs() >= 7,
        "{} 429s",
        runpod.throttled_runs()
    );
    assert_eq!(runpod.submitted(), 1, "one job, after the throttle");
}
