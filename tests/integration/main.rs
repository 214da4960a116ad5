//! Every integration test in one binary (one link, one `common`): the
//! store against DynamoDB Local, the handlers and the `events/` files
//! through the real handler code, replies that outlast the request,
//! paging at scale, the model catalogue and settings, the local RunPod endpoint, and (ignored unless
//! `scripts/test.sh` starts the whole stack) the end-to-end run over HTTP.

mod after_reply;
mod attach;
mod branches;
mod common;
mod e2e;
mod events;

mod first_bytes;
mod handlers;
mod models;
mod openapi;
mod paging;
mod pending;
mod runpod_local;
mod stall;
mod store;
