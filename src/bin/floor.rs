//! The floor under a request's CPU: a Lambda function that makes the
//! outside calls of a list or of a new-conversation send, through the
//! service's own clients built as the functions build them, and nothing
//! else: no JWT check, no API Gateway event turned into a request (the
//! event's route is all it reads), no logs, a fixed response body.
//!
//! - `GET /api/chat/conversations`: the first page of a user's
//!   conversations (one Query);
//! - `POST /api/chat/send`: a new conversation stored with its first
//!   message and claimed (TransactWriteItems), RunPod `run`, the wait and
//!   `status` as the send polls, the reply stored (TransactWriteItems).
//!
//! `FLOOR_SKIP=dynamodb` or `FLOOR_SKIP=runpod` leaves those calls out
//! (the send still waits as its poll would), to tell what each costs in
//! place. What a real function costs beyond this binary is the service's
//! own work. Run it in place of the functions' binaries under the peer
//! benchmark (BENCHMARKS.md, "the floor"):
//!
//! ```sh
//! cargo build --release --bin floor
//! mkdir -p /tmp/floor && cp target/release/floor /tmp/floor/list-conversations \
//!   && cp target/release/floor /tmp/floor/send-message
//! python3 ../shared/bench/vs_peer.py --bin-dir /tmp/floor
//! ```

use std::time::Duration;

use chat_shared::{
    chat::Prompt,
    deadline::hold_lapses,
    domain::{Claim, Conversation, Message, MessageContent, MessageId, Role, Title, UserId},
    http::CONVERSATIONS_PAGE_DEFAULT,
    runpod::{build_input, JobPoll, RunPodClient},
    store::{prelude::*, PageRequest},
    App,
};
use lambda_http::{
    lambda_runtime::{self, service_fn, LambdaEvent},
    Error,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

/// The only field of the API Gateway event this function reads.
#[derive(Deserialize)]
struct Route {
    #[serde(rename = "routeKey")]
    route_key: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let app = App::from_env(chat_shared::Callers::Users)
        .await?
        .with_runpod()?;
    let floor = Floor {
        app,
        user: UserId::parse("floor")?,
        skip: std::env::var("FLOOR_SKIP").unwrap_or_default(),
    };
    lambda_runtime::run(service_fn(|event: LambdaEvent<Route>| {
        let floor = &floor;
        async move {
            match event.payload.route_key.as_str() {
                "POST /api/chat/send" => floor.send().await,
                _ => floor.list().await,
            }
        }
    }))
    .await
}

struct Floor {
    app: App<RunPodClient>,
    user: UserId,
    /// The calls left out: `dynamodb`, `runpod` or none.
    skip: String,
}

impl Floor {
    /// The calls of `GET /api/chat/conversations`.
    async fn list(&self) -> Result<Value, Error> {
        let page = PageRequest {
            limit: CONVERSATIONS_PAGE_DEFAULT,
            cursor: None,
        };
        if self.skip != "dynamodb" {
            let store = self.app.chat.store();
            store.list_conversations(&self.user, &page).await?;
        }
        Ok(response(
            json!({ "conversations": [], "next_cursor": null }),
        ))
    }

    /// The calls of `POST /api/chat/send` in a new conversation whose job
    /// is done when first polled.
    async fn send(&self) -> Result<Value, Error> {
        let (app, user) = (&self.app, &self.user);
        let (store, model) = (app.chat.store(), app.chat.model());
        let deadline = Instant::now() + Duration::from_secs(25);
        let content = MessageContent::parse("hello".into(), 100)?;
        let first = Message::new(Role::User, content.as_str().to_owned(), chrono::Utc::now());
        let claim = Claim {
            reply: MessageId::new(),
            until: hold_lapses(deadline),
        };
        let title = Title::from_first_message(&content);
        let conversation = Conversation::started_with(title, &first).claimed(&claim);
        let quota = app.chat.quota().at(first.created_at);
        let (dynamodb, runpod) = (self.skip != "dynamodb", self.skip != "runpod");
        if dynamodb {
            store
                .start_conversation(user, &conversation, &first, &quota)
                .await?;
        }
        let mut reply = Message::new(Role::Assistant, String::new(), chrono::Utc::now());
        reply.id = claim.reply;
        if runpod {
            // The job's input as the send builds it, for the default model.
            let (catalogue, history) = (app.chat.catalogue(), [first]);
            let input = build_input(&Prompt::by_default(catalogue, &history));
            let endpoint = &catalogue.default_model().endpoint_id;
            let job = model.submit(endpoint, input, None, deadline).await?;
            let JobPoll::Done(Ok(completion)) = model.wait(endpoint, &job, deadline).await? else {
                return Err("the job was not done when polled".into());
            };
            reply.settle(completion.kept(app.config.max_reply_chars));
        } else {
            tokio::time::sleep(model.config().poll_initial_delay).await;
        }
        if dynamodb {
            store.add_reply(user, conversation.id, &reply).await?;
        }
        Ok(response(json!({ "conversation_id": conversation.id })))
    }
}

/// An API Gateway response with a JSON body.
fn response(body: Value) -> Value {
    json!({
        "statusCode": 200,
        "headers": { "content-type": "application/json" },
        "body": body.to_string(),
    })
}
