//! The [`super::Store`] traits on one DynamoDB table (key formats in
//! [`super::keys`]), one file per capability:
//!
//! - `items`: the items and their mapping to the domain types;
//! - `pages`: the reads (a conversation with its newest page in one Query,
//!   later pages, the list from the index);
//! - `conversations`: starting, appending, renaming, deleting, purging;
//! - `messages`: the guarded message write both of those share;
//! - `branches`: regenerate, edit and switch moving messages on and off
//!   the active path, and the whole-conversation read a switch needs;
//! - `replies`: complete, pending, finished, released, kept-when-stopped;
//! - `ratings`: feedback on replies;
//! - `shares`: share links and their copies;
//! - `usage`: the daily counters, reservations and live generations;
//! - `keyed`: `Idempotency-Key` records;
//! - `transact`: sending transactions and reading their cancellations.

mod branches;
mod conversations;
mod items;
mod keyed;
mod live;
mod messages;
mod pages;
mod ratings;
mod replies;
mod shares;
mod transact;
mod usage;

use aws_sdk_dynamodb::{
    error::{ProvideErrorMetadata, SdkError},
    Client,
};

use super::{CursorCodec, StoreError};
use crate::domain::{Conversation, ConversationId, Message, UserId};

/// The DynamoDB store: one client, one table, built once per cold start.
pub struct DynamoStore {
    client: Client,
    table: String,
    cursors: CursorCodec,
}

impl DynamoStore {
    /// The store on `table`, signing its page cursors with `cursors`.
    pub fn new(client: Client, table: impl Into<String>, cursors: CursorCodec) -> Self {
        Self {
            client,
            table: table.into(),
            cursors,
        }
    }
}

/// A DynamoDB call's failure, with what was being done: unavailable when
/// DynamoDB did not answer (in time) or refused for load, a backend
/// failure otherwise.
fn backend<E: Cause>(context: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| {
        let unavailable = e.unavailable();
        let source = Box::new(e);
        if unavailable {
            StoreError::Unavailable { context, source }
        } else {
            StoreError::Backend { context, source }
        }
    }
}

/// A failed DynamoDB call, as [`backend`] sorts it.
trait Cause: std::error::Error + Send + Sync + 'static {
    /// Whether DynamoDB was not there to answer: a timeout (the client's
    /// attempt and operation timeouts), no connection, a broken answer, or
    /// a refusal for load or an internal error. Worth a retry later.
    fn unavailable(&self) -> bool;
}

/// DynamoDB's error codes that mean "not now" rather than "not this".
const UNAVAILABLE_CODES: [&str; 5] = [
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
];

impl<E, R> Cause for SdkError<E, R>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn unavailable(&self) -> bool {
        match self {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(e) => e
                .err()
                .code()
                .is_some_and(|code| UNAVAILABLE_CODES.contains(&code)),
            _ => false,
        }
    }
}

impl Cause for aws_sdk_dynamodb::error::BuildError {
    fn unavailable(&self) -> bool {
        false
    }
}

/// Seeding and tests only (the benchmark's conversations, fixtures): a
/// conversation, or a message, stored as is, without a send's count and claim.
impl DynamoStore {
    /// Stores a new conversation with its first message, atomically.
    pub async fn create_conversation(
        &self,
        user: &UserId,
        conversation: &Conversation,
        first: &Message,
    ) -> Result<(), StoreError> {
        self.create(user, conversation, first, None).await
    }

    /// Appends a message and moves the conversation with it, atomically,
    /// only if the conversation is the user's and no reply is pending.
    pub async fn append_message(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
    ) -> Result<(), StoreError> {
        self.append(user, conversation, message, None).await
    }
}
