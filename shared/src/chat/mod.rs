//! The use cases, over one [`Chat`] context built once per cold start:
//! send a message, list, read, rename and delete conversations, and
//! settle replies that outlast their request.
//!
//! - [`model`]: what the use cases need of a model ([`ChatModel`]), with its own error.
//! - `send`: one send, in the steps it has (start or continue, submit, wait, settle).
//! - `pending`: replies that outlast the request: checks at the model, expiry, webhooks.
//! - `streaming`: a send relayed piece by piece; `stop`: ending a reply early.
//! - `conversations`: list, read, rename, delete, export.
//! - `usage`: the per-user daily quotas and what a user used today.

mod attach;
mod branch;
mod conversations;
mod feedback;
pub mod model;
mod pending;
mod send;
mod shares;
mod stop;
mod streaming;
#[cfg(test)]
mod tests;
mod usage;

use std::time::Duration;

pub use attach::AttachedReply;
pub use conversations::EXPORT_READS_AT_ONCE;
pub use model::{
    ChatModel, Completion, Generation, JobDelivery, JobRef, ModelError, Prompt, Sampling,
    StreamEnd, StreamStep, Waited,
};
pub use pending::WebhookResult;
pub use send::{SendKind, SendOutcome, SendRequest, SendTimes};
pub use streaming::{EventSink, StreamEvent, StreamingReply, KEEP_ALIVE, RECONNECT_AFTER};
pub use usage::{next_midnight, QuotaLimits, UsageReport};

use crate::{
    catalogue::Catalogue, domain::SettingsError, refusal::Refusal, store::StoreError,
    webhook::Webhooks,
};

/// How much of a conversation goes to the model.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Most messages read and sent.
    pub max_messages: u32,
    /// Most characters sent; the oldest messages go first.
    pub max_chars: usize,
    /// Longest reply kept; a longer one is stored cut, marked truncated.
    pub max_reply_chars: usize,
}

/// How pending replies are checked and when they give up.
#[derive(Debug, Clone, Copy)]
pub struct PendingPolicy {
    /// A reply pending longer than this is failed.
    pub max_age: Duration,
    /// Most pending replies checked at the model by one read.
    pub max_checks: usize,
}

/// Everything the use cases work with: the store, the model, the webhook
/// signer and the limits. `M` is `()` for functions that never ask the
/// model (list, rename, delete): their use cases need no [`ChatModel`].
pub struct Chat<S, M = ()> {
    store: S,
    model: M,
    webhooks: Webhooks,
    limits: HistoryLimits,
    pending: PendingPolicy,
    quota: QuotaLimits,
    catalogue: Catalogue,
}

impl<S> Chat<S, ()> {
    /// A context without a model; [`Chat::with_model`] adds one.
    pub fn new(
        store: S,
        webhooks: Webhooks,
        limits: HistoryLimits,
        pending: PendingPolicy,
    ) -> Self {
        Self {
            store,
            model: (),
            webhooks,
            limits,
            pending,
            quota: QuotaLimits::default(),
            catalogue: Catalogue::from_lookup(&|_| None).expect("the one-model default"),
        }
    }
}

impl<S, M> Chat<S, M> {
    /// The same context with `model` to submit jobs to.
    pub fn with_model<N>(self, model: N) -> Chat<S, N> {
        Chat {
            store: self.store,
            model,
            webhooks: self.webhooks,
            limits: self.limits,
            pending: self.pending,
            quota: self.quota,
            catalogue: self.catalogue,
        }
    }

    /// The same context with the models of `catalogue` to choose from.
    pub fn with_catalogue(self, catalogue: Catalogue) -> Self {
        Self { catalogue, ..self }
    }

    /// The models conversations choose from.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The same context with per-user daily quotas.
    pub fn with_quota(self, quota: QuotaLimits) -> Self {
        Self { quota, ..self }
    }

    /// The store, for tools and tests that seed or inspect it.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The per-user daily quotas a send counts against.
    pub fn quota(&self) -> QuotaLimits {
        self.quota
    }

    /// The signer of webhook URLs, which also verifies their tokens.
    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }
}

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The request is declined, by the store or the use case.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed (the user's message may or may not be stored: the
    /// step that failed says which in the log).
    #[error(transparent)]
    Store(StoreError),
    /// The model failed; the user's message is stored.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The settings asked for are refused; nothing is stored.
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(refusal) => ChatError::Refused(refusal),
            other => ChatError::Store(other),
        }
    }
}
