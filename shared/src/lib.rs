//! The chat service's library: everything with logic. The Lambda binaries in
//! `functions/` only wire these pieces together.
//!
//! # Layout
//!
//! - [`config`]: `Config` / `RunPodConfig` from the environment, read once per cold start.
//! - [`catalogue`]: the models conversations choose from (`RUNPOD_MODELS`), each on its RunPod endpoint.
//! - [`auth`]: Bearer JWT (HS256, `JWT_SECRET`) to a `UserId`.
//! - [`domain`]: ids, validated message content, titles, conversations, messages, settings, token usage.
//! - [`store`]: the store traits by capability (`Store` is all of them), their DynamoDB implementation,
//!   every key format (`store::keys`) and signed page cursors (`store::cursor`).
//! - [`runpod`]: the RunPod serverless client: job input, polling, retries, output parsing.
//! - [`signing`]: opaque tokens: HMAC-signed (page cursors), AES-GCM-encrypted (webhook URLs).
//! - [`chat`]: the use cases (send, list, get, rename, delete) over the store and model traits.
//! - [`http`]: request parsing, the handlers, the contract and its page (`docs`), and the one error-to-response mapping.
//! - [`stream`]: the DynamoDB stream consumer that purges deleted conversations' messages.
//! - [`webhook`]: encrypted RunPod webhook URLs for replies that outlast the request.
//! - [`refusal`]: the one type of a declined request, from the store to the status it maps to.
//! - [`app`]: what a function builds once per cold start.
//! - [`telemetry`]: tracing setup (JSON on Lambda).
//! - [`tls`]: both HTTP clients' TLS, with compiled-in root certificates.
//! - [`call_log`]: every DynamoDB call as the IAM actions it needs (`AWS_CALL_LOG`; tests only).

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod call_log;
pub mod catalogue;
pub mod chat;
pub mod config;
pub mod deadline;
pub mod domain;
pub mod http;
pub mod refusal;
pub mod runpod;
pub mod secrets;
pub mod signing;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod webhook;

pub use app::{App, Callers};
