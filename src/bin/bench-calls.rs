//! The client CPU of each outside call a send makes, measured in process
//! with the service's own code (release build): a DynamoDB Query and
//! TransactWriteItems through `DynamoStore`, RunPod `run` and `status`
//! through `RunPodClient`. Beside them, what the same exchanges cost
//! without the SDK (a signed request built by hand, `aws-sigv4` + reqwest)
//! and what a bare HTTP exchange on loopback costs: the floor every call
//! pays on this machine.
//!
//! Run by `src/bin/bench.rs` (`scripts/bench.sh`), which passes DynamoDB
//! Local, the table and the local RunPod endpoint in the environment.
//! Prints one JSON object on stdout. Argument: `[CALLS_PER_ROW]`.

use std::{
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{sign, SignableBody, SignableRequest, SigningSettings},
    sign::v4,
};
use chat_service_dev::{
    measure::{cpu_time, scheduled_time, us},
    seed::{seed_messages, SAMPLE_MESSAGE},
};
use chat_shared::{
    app::load_aws_config,
    chat::Prompt,
    config::{Config, RunPodConfig},
    domain::{ConversationId, Message, MessageId, Role, UserId},
    runpod::{build_input, RunPodClient},
    store::{keys, prelude::*, PageRequest},
    App,
};
use serde_json::{json, Value};

/// The history window a send reads (HISTORY_MAX_MESSAGES's default).
const HISTORY: u32 = 20;

/// Runs `f` `n` times after a warm-up; its client CPU per call.
async fn measure<F, Fut>(name: &str, n: usize, mut f: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..50 {
        f().await;
    }
    let pid = std::process::id();
    let (sched0, ticks0, t0) = (scheduled_time(pid), cpu_time(pid), Instant::now());
    for _ in 0..n {
        f().await;
    }
    let (sched, ticks, wall) = (scheduled_time(pid), cpu_time(pid), t0.elapsed());
    let per = |d: Duration| us(d / n as u32);
    json!({
        "call": name,
        "calls": n,
        "cpu_us": per(sched - sched0),
        "user_us": per(ticks.0 - ticks0.0),
        "system_us": per(ticks.1 - ticks0.1),
        "wall_us": per(wall),
    })
}

/// A DynamoDB request signed by hand: what a client without the SDK's
/// orchestration (interceptors, retries, endpoint rules) would send.
struct Signed {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    credentials: Credentials,
}

impl Signed {
    async fn call(&self, target: &str, body: &[u8]) -> Value {
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("dynamodb")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let target = format!("DynamoDB_20120810.{target}");
        let headers = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", target.as_str()),
        ];
        let signable = SignableRequest::new(
            "POST",
            &self.endpoint,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut request = http::Request::post(&self.endpoint);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let mut request = request.body(body.to_vec()).unwrap();
        instructions.apply_to_request_http1x(&mut request);
        let response = self
            .http
            .execute(reqwest::Request::try_from(request).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        assert!(status.is_success(), "{status}: {bytes:?}");
        serde_json::from_slice(&bytes).unwrap()
    }
}

impl Signed {
    /// Signs as the functions' AWS configuration would.
    async fn from(aws: &aws_config::SdkConfig, endpoint: String) -> Self {
        use aws_credential_types::provider::ProvideCredentials;
        let provider = aws.credentials_provider().unwrap();
        Signed {
            http: reqwest::Client::new(),
            endpoint,
            region: aws.region().unwrap().to_string(),
            credentials: provider.provide_credentials().await.unwrap(),
        }
    }
}

/// What the measured calls work on: a conversation as a send finds it
/// (longer than the history window), and a submitted job.
struct Scene {
    app: App,
    model: RunPodClient,
    user: UserId,
    id: ConversationId,
    history: Vec<Message>,
    job: String,
    deadline: tokio::time::Instant,
}

impl Scene {
    async fn new(aws: &aws_config::SdkConfig) -> Self {
        // Built as the functions build them (send-message's main, App::from_env).
        let app = App::new(
            Config::from_env().unwrap(),
            aws_sdk_dynamodb::Client::new(aws),
        );
        let model = RunPodClient::new(RunPodConfig::from_env().unwrap()).unwrap();
        let user = UserId::parse("bench-calls").unwrap();
        let id = seed_messages(&app, user.as_str(), HISTORY as usize + 10).await;
        let history: Vec<Message> = (0..HISTORY).map(|_| user_message()).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(24 * 3600);
        let mut scene = Scene {
            app,
            model,
            user,
            id,
            history,
            job: String::new(),
            deadline,
        };
        scene.job = scene
            .model
            .submit(scene.endpoint(), scene.input(), None, deadline)
            .await
            .unwrap();
        scene
    }

    /// The default model's endpoint.
    fn endpoint(&self) -> &str {
        &self.app.chat.catalogue().default_model().endpoint_id
    }

    /// The job input a send of `history` builds for the default model.
    fn input(&self) -> Value {
        build_input(&Prompt::by_default(
            self.app.chat.catalogue(),
            &self.history,
        ))
    }

    /// The service's own calls: `DynamoStore` and `RunPodClient`.
    async fn service_rows(&self, n: usize) -> Vec<Value> {
        let (store, user, id) = (self.app.chat.store(), &self.user, self.id);
        let recent = PageRequest {
            limit: HISTORY,
            cursor: None,
        };
        vec![
            measure(
                "DynamoStore: Query (conversation + 20 messages)",
                n,
                || async {
                    store.conversation_page(user, id, &recent).await.unwrap();
                },
            )
            .await,
            measure(
                "DynamoStore: TransactWriteItems (append a message)",
                n,
                || {
                    let m = user_message();
                    async move { store.append_message(user, id, &m).await.unwrap() }
                },
            )
            .await,
            measure("RunPodClient: run (20 messages)", n, || async {
                self.model
                    .submit(self.endpoint(), self.input(), None, self.deadline)
                    .await
                    .unwrap();
            })
            .await,
            measure("RunPodClient: status", n, || async {
                let endpoint = self.endpoint();
                self.model
                    .poll(endpoint, &self.job, self.deadline)
                    .await
                    .unwrap();
            })
            .await,
        ]
    }

    /// The same DynamoDB exchanges without the SDK.
    async fn signed_rows(&self, n: usize, signed: &Signed) -> Vec<Value> {
        let table = &self.app.config.table_name;
        let pk = keys::conversation_pk(&self.user, self.id);
        let query = json!({
            "TableName": table,
            "KeyConditionExpression": format!("{} = :pk", keys::PK),
            "ExpressionAttributeValues": { ":pk": { "S": pk } },
            "ScanIndexForward": false,
            "Limit": HISTORY + 1,
        })
        .to_string();
        vec![
            measure(
                "no SDK: signed Query (same items, JSON parsed)",
                n,
                || async {
                    signed.call("Query", query.as_bytes()).await;
                },
            )
            .await,
            measure("no SDK: signed TransactWriteItems (one Put)", n, || {
                let item = json!({
                    keys::PK: { "S": pk },
                    keys::SK: { "S": keys::message_sk(MessageId::new()) },
                    "role": { "S": "user" },
                    "content": { "S": SAMPLE_MESSAGE },
                    "created_at": { "S": chrono::Utc::now().to_rfc3339() },
                });
                let put = json!({ "Put": { "TableName": table, "Item": item } });
                let body = json!({ "TransactItems": [put] }).to_string();
                async move {
                    signed.call("TransactWriteItems", body.as_bytes()).await;
                }
            })
            .await,
        ]
    }

    /// A bare HTTP exchange on loopback: the floor every call pays.
    async fn bare_row(&self, n: usize) -> Value {
        let config = self.model.config();
        let health = format!("{}/{}/health", config.base_url, self.endpoint());
        let bare = reqwest::Client::new();
        measure(
            "bare HTTP exchange (GET, tiny body, loopback)",
            n,
            || async {
                let r = bare.get(&health).send().await.unwrap();
                r.bytes().await.unwrap();
            },
        )
        .await
    }
}

fn user_message() -> Message {
    Message::new(Role::User, SAMPLE_MESSAGE.to_owned(), chrono::Utc::now())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1000);
    let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("AWS_ENDPOINT_URL_DYNAMODB");
    let aws = load_aws_config().await;
    let scene = Scene::new(&aws).await;
    let signed = Signed::from(&aws, endpoint).await;
    // The first row is the floor the bench prints per invocation.
    let mut rows = vec![scene.bare_row(n).await];
    rows.extend(scene.service_rows(n).await);
    rows.extend(scene.signed_rows(n, &signed).await);
    println!("{}", json!({ "calls_per_row": n, "rows": rows }));
}
