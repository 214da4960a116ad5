//! [`ConversationStore`] on one DynamoDB table (key formats in
//! [`super::keys`]): the items and their mapping in `items`, the queries
//! and paging in `read`, the conditional writes in `write`.

mod items;
mod keyed;
mod read;
mod write;

use aws_sdk_dynamodb::{
    error::{ProvideErrorMetadata, SdkError},
    Client,
};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{
    ConversationStore, CursorCodec, DailyUsage, FinishResult, KeyedRequest, KeyedStart, Page,
    PageRequest, PendingReply, Quota, StoreError,
};
use crate::domain::{
    Claim, Conversation, ConversationId, Message, MessageId, ReplyOutcome, Reservation, Title,
    UserId,
};

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

impl ConversationStore for DynamoStore {
    async fn create_conversation(
        &self,
        user: &UserId,
        conversation: &Conversation,
        first: &Message,
    ) -> Result<(), StoreError> {
        self.create(user, conversation, first, None).await
    }

    async fn append_message(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
    ) -> Result<(), StoreError> {
        self.append(user, conversation, message, None).await
    }

    async fn append_and_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
        claim: &Claim,
        quota: &Quota,
    ) -> Result<(), StoreError> {
        self.append(user, conversation, message, Some((claim, quota)))
            .await
    }

    async fn start_conversation(
        &self,
        user: &UserId,
        conversation: &Conversation,
        first: &Message,
        quota: &Quota,
    ) -> Result<(), StoreError> {
        self.create(user, conversation, first, Some(quota)).await
    }

    async fn start_keyed(
        &self,
        request: KeyedRequest<'_>,
        lock_until: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<KeyedStart, StoreError> {
        self.start_keyed_request(request, lock_until, ttl).await
    }

    async fn finish_keyed(
        &self,
        request: KeyedRequest<'_>,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        self.finish_keyed_request(request, status, body).await
    }

    async fn release_keyed(&self, request: KeyedRequest<'_>) -> Result<(), StoreError> {
        self.release_keyed_request(request).await
    }

    async fn daily_usage(
        &self,
        user: &UserId,
        day: chrono::NaiveDate,
    ) -> Result<DailyUsage, StoreError> {
        self.daily(user, day).await
    }

    async fn add_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
    ) -> Result<(), StoreError> {
        self.add_complete_reply(user, conversation, reply).await
    }

    async fn release_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        reserved: Option<Reservation>,
    ) -> Result<(), StoreError> {
        self.release(user, conversation, reply, reserved).await
    }

    async fn conversation_page(
        &self,
        user: &UserId,
        conversation: ConversationId,
        page: &PageRequest,
    ) -> Result<(Conversation, Page<Message>), StoreError> {
        if page.cursor.is_none() {
            return self.first_page(user, conversation, page.limit).await;
        }
        // Later pages start past the conversation item: two reads, issued
        // together (one round trip's worth of latency).
        tokio::try_join!(
            self.get_conversation(user, conversation),
            self.message_page(user, conversation, page)
        )
    }

    async fn add_pending_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
    ) -> Result<(), StoreError> {
        self.add_pending(user, conversation, reply).await
    }

    async fn finish_reply(
        &self,
        reply: PendingReply<'_>,
        outcome: &ReplyOutcome,
        at: DateTime<Utc>,
    ) -> Result<FinishResult, StoreError> {
        self.finish(reply, outcome, at).await
    }

    async fn rename_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
        title: &Title,
    ) -> Result<Conversation, StoreError> {
        self.rename(user, conversation, title).await
    }

    async fn delete_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<Conversation, StoreError> {
        self.delete(user, conversation).await
    }

    async fn message(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        self.get_message(user, conversation, message).await
    }

    async fn keep_cancelled_text(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
        text: &str,
        day: chrono::NaiveDate,
    ) -> Result<bool, StoreError> {
        self.keep_cancelled(user, conversation, message, text, day)
            .await
    }

    async fn purge_messages(
        &self,
        user: &UserId,
        conversation: ConversationId,
        until: Instant,
    ) -> Result<bool, StoreError> {
        self.purge(user, conversation, until).await
    }

    async fn list_conversations(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        self.conversation_list(user, page).await
    }
}
