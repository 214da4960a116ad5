//! Development tools for the chat service (not deployed):
//!
//! - [`bench`]: the benchmark's Lambda Runtime API, DynamoDB call counter, rows and report.
//! - [`apigw`]: API Gateway HTTP API events, the one builder of the tests and the benchmark.
//! - [`table`]: creates a DynamoDB table from `template.yaml`'s `ChatTable`,
//!   so local runs and tests use exactly the deployed key schema and index.
//! - [`measure`]: a process's CPU time and peak memory, for the benchmarks.
//! - [`runpod_local`]: a local stand-in for a RunPod serverless endpoint.
//! - [`seed`]: conversations stored through the service's store, for the benchmarks and the tests.
//! - [`DEV_JWT_SECRET`], [`DEV_SIGNING_SECRET`]: the secrets of local runs and sample events.

pub mod apigw;
pub mod bench;
pub mod measure;
pub mod runpod_local;
pub mod seed;
pub mod table;

/// The JWT secret of local runs (`scripts/dev.sh`), the sample events in
/// `events/` and the tests. Public on purpose; never deploy with it.
pub const DEV_JWT_SECRET: &str = "local-development-secret-do-not-deploy";
/// The signing secret of local runs and sample events (cursors, webhook URLs).
pub const DEV_SIGNING_SECRET: &str = "local-signing-secret-do-not-deploy";
