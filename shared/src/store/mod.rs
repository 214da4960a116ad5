//! Conversation storage: the traits the use cases need, by capability
//! ([`Store`] is all of them), their DynamoDB implementation, the key
//! formats and page cursors.

pub mod cursor;
pub mod dynamo;
pub mod keys;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;

use std::future::Future;

pub use cursor::{CursorCodec, CursorError};

/// Every store trait, for code that calls them on a concrete store (the
/// seeding, the benchmark, tests): `use chat_shared::store::prelude::*`.
pub mod prelude {
    pub use super::{
        Conversations, Idempotency, Live, Pages, Quotas, Ratings, Replies, Shares, Store,
    };
}
pub use dynamo::DynamoStore;

use crate::domain::{
    Claim, Conversation, ConversationId, Feedback, Message, MessageId, ReplyOutcome, Reservation,
    SettingsPatch, Share, ShareId, SharedConversation, Title, UserId,
};
use crate::refusal::Refusal;

/// A send's day and the limits it must stay under, checked in the write
/// that stores the user's message (and counts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The UTC day the send counts on.
    pub day: chrono::NaiveDate,
    /// Sends a user may make that day; `None`: unlimited.
    pub message_limit: Option<u64>,
    /// Tokens a user may use that day; `None`: unlimited. A send is refused
    /// once the day's held tokens (counted, plus what replies not settled
    /// yet reserved) reached it; the reply that crosses it is kept.
    pub token_limit: Option<u64>,
    /// What this send holds until its reply settles (0 without a token limit).
    pub reserve: u64,
    /// The most generations the user may have running at once; `None`:
    /// unlimited.
    pub generations: Option<GenerationCap>,
}

/// How many replies one user may have in the making at once (streams
/// holding a function instance, jobs pending at RunPod), enforced across
/// instances by a set of reply ids on one item per user: a send adds its
/// reply in the write that stores its question, refused at the cap, and
/// the write that settles the reply removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationCap {
    /// Most at once.
    pub max: u32,
    /// An entry older than this is a send that died before settling (the
    /// longest a reply can stay unsettled has passed): a refused send
    /// clears such entries and tries once more.
    pub stale_before: chrono::DateTime<chrono::Utc>,
}

/// What a user used on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DailyUsage {
    /// Sends (user messages stored).
    pub messages: u64,
    /// Tokens of the replies, as the worker reported them or estimated.
    pub tokens: u64,
    /// Tokens held for replies not settled yet ([`crate::domain::Reservation`]).
    pub reserved: u64,
}

/// A request made under an `Idempotency-Key`, as its record names it.
#[derive(Debug, Clone, Copy)]
pub struct KeyedRequest<'a> {
    /// The caller: keys belong to them.
    pub user: &'a UserId,
    /// The `Idempotency-Key`.
    pub key: &'a str,
    /// A digest of the request body: the same key with another body is refused.
    pub body_hash: &'a str,
}

/// What the record of a request key said when a request took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedStart {
    /// No live record: this request runs (and holds the key until `lock_until`).
    Run,
    /// The first request with the key finished: its answer, to send again.
    Replay {
        /// The HTTP status.
        status: u16,
        /// The JSON body.
        body: String,
    },
    /// The first request with the key is still running.
    InUse,
    /// The key was used with another body.
    Mismatch,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The page's items.
    pub items: Vec<T>,
    /// Fetches the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// Which page to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Most items on the page.
    pub limit: u32,
    /// Where the page starts; `None` for the first page.
    pub cursor: Option<String>,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request is declined (no such conversation, a reply pending, a
    /// quota); nothing was stored.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A cursor this server did not issue for this list and user.
    #[error("invalid page cursor")]
    InvalidCursor(#[source] CursorError),
    /// An item the mapping cannot read (or write).
    #[error("stored item could not be read: {0}")]
    Corrupt(String),
    /// DynamoDB did not answer in time, could not be reached, or refused
    /// for load: the request may succeed later (503). A write that timed
    /// out may have been applied.
    #[error("DynamoDB did not answer: {context}")]
    Unavailable {
        /// What was being done.
        context: &'static str,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// DynamoDB refused the call (a malformed or oversized item, say).
    #[error("DynamoDB request failed: {context}")]
    Backend {
        /// What was being done.
        context: &'static str,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A pending reply as its finishers name it: where it is stored and the
/// job it waits for.
#[derive(Debug, Clone, Copy)]
pub struct PendingReply<'a> {
    /// The conversation's owner.
    pub user: &'a UserId,
    /// The conversation.
    pub conversation: ConversationId,
    /// The reply.
    pub message: MessageId,
    /// The RunPod job the reply waits for.
    pub job_id: &'a str,
    /// What it holds of its day's token quota, let go when it settles.
    pub reserved: Option<Reservation>,
}

/// What [`ConversationStore::finish_reply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishResult {
    /// This call completed or failed the reply.
    Written,
    /// The reply was already final (another finisher came first).
    AlreadyFinal,
    /// No such reply (yet): not stored, or its conversation was deleted.
    Missing,
    /// The reply is pending for another job.
    OtherJob,
}

/// Everything the use cases need of storage, by capability. Every method
/// is scoped to one user: no method can reach another user's items.
pub trait Store:
    Conversations + Pages + Replies + Idempotency + Quotas + Live + Ratings + Shares
{
}

impl<T> Store for T where
    T: Conversations + Pages + Replies + Idempotency + Quotas + Live + Ratings + Shares
{
}

/// What a `PATCH` of a conversation changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationChange {
    /// A new title.
    pub title: Option<Title>,
    /// Settings set or reset (already checked against the catalogue).
    pub settings: SettingsPatch,
    /// A message the active path is to run through (the use case switches
    /// it before the store applies the rest).
    pub active_message_id: Option<MessageId>,
}

/// A regenerate's or an edit's change to the active path, written with
/// the send's claim and count.
#[derive(Debug, Clone, Copy)]
pub struct Branching<'a> {
    /// The path's message the new version follows; `None` when the new
    /// version is a first message.
    pub fork: Option<MessageId>,
    /// The active path after `fork`, oldest first, as [`crate::domain::leaving`]
    /// prepared it: moved off the path.
    pub off: &'a [Message],
    /// An edit's new user message, stored after `fork`; `None` for a regenerate.
    pub message: Option<&'a Message>,
    /// The path's last message afterwards (the conversation's `last_message`).
    pub leaf: &'a Message,
    /// When the change is made (the conversation's `updated_at`).
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A switch: the active path after `fork` leaves for another branch.
#[derive(Debug, Clone, Copy)]
pub struct Switch<'a> {
    /// The last message the two paths share; `None` when they share none.
    pub fork: Option<MessageId>,
    /// The path after `fork`, oldest first, as [`crate::domain::leaving`]
    /// prepared it: moved off the path.
    pub off: &'a [Message],
    /// The new path after `fork`, oldest first: moved onto it.
    pub on: &'a [Message],
    /// The new path's last message.
    pub leaf: &'a Message,
}

/// Every message of a conversation, for a switch.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The conversation.
    pub conversation: Conversation,
    /// Its active path, oldest first.
    pub path: Vec<Message>,
    /// Every other message, each with its parent.
    pub off: Vec<Message>,
}

/// Writing conversations: start one (counting the send and claiming it
/// for the reply), append to one, rename or change its settings, delete, purge.
pub trait Conversations: Sync {
    /// Stores a send's new conversation, claimed, with its first message,
    /// and counts the send on the quota's day, in one write: refused
    /// ([`Refusal::QuotaExceeded`](crate::refusal::Refusal::QuotaExceeded)) over the quota.
    fn start_conversation(
        &self,
        user: &UserId,
        conversation: &Conversation,
        first: &Message,
        quota: &Quota,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends the user's message as [`Self::append_message`] does, claims
    /// the conversation for the reply, counts the send and makes the
    /// send's change to the settings, in one write: refused
    /// ([`Refusal::ReplyPending`](crate::refusal::Refusal::ReplyPending)) while another reply is pending
    /// or another send's claim holds, or over the quota.
    fn append_and_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
        claim: &Claim,
        quota: &Quota,
        settings: &SettingsPatch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves the active path as a regenerate or an edit does ([`Branching`]),
    /// claims the conversation for the reply, counts the send and makes its
    /// change to the settings, in one write, refused as
    /// [`Self::append_and_claim`] is.
    fn branch_and_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        branching: &Branching<'_>,
        claim: &Claim,
        quota: &Quota,
        settings: &SettingsPatch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves the active path to another branch in one write, only while no
    /// reply is pending or claimed ([`Refusal::ReplyPending`](crate::refusal::Refusal::ReplyPending)).
    fn switch_branch(
        &self,
        user: &UserId,
        conversation: ConversationId,
        switch: &Switch<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Sets the title, changes the settings, or both; `updated_at` stays
    /// (the list follows messages, not renames).
    fn update_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
        change: &ConversationChange,
    ) -> impl Future<Output = Result<Conversation, StoreError>> + Send;

    /// Removes the conversation item: from then on the conversation is gone
    /// from list, get and send. Its messages are removed by [`Self::purge_messages`].
    fn delete_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> impl Future<Output = Result<Conversation, StoreError>> + Send;

    /// Deletes the conversation's message items, stopping at `until` if it
    /// comes first. Idempotent; `Ok(true)` when none is left.
    fn purge_messages(
        &self,
        user: &UserId,
        conversation: ConversationId,
        until: tokio::time::Instant,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Reading conversations: the list, a conversation with a page of its
/// messages, one message.
pub trait Pages: Sync {
    /// The user's conversations, most recently updated first.
    fn list_conversations(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<Conversation>, StoreError>> + Send;

    /// The conversation and a page of messages: the newest `limit` before
    /// the cursor, oldest first inside the page.
    fn conversation_page(
        &self,
        user: &UserId,
        conversation: ConversationId,
        page: &PageRequest,
    ) -> impl Future<Output = Result<(Conversation, Page<Message>), StoreError>> + Send;

    /// The conversation and every message of it, on the active path or
    /// off: a read as long as the conversation, for a switch.
    fn tree(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> impl Future<Output = Result<Tree, StoreError>> + Send;

    /// One message, if it is stored (its conversation may be deleted).
    fn message(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
    ) -> impl Future<Output = Result<Option<Message>, StoreError>> + Send;
}

/// Writing replies: complete, pending, finished once, released, or the
/// text a stopped stream kept. Each settles the reply's tokens.
pub trait Replies: Sync {
    /// Stores the complete reply its claim was for and ends the claim,
    /// moving `updated_at`, `last_message` and the count with it, and
    /// settles its tokens on its day's usage (its reservation let go).
    fn add_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores the reply its claim was for in [`crate::domain::MessageStatus::Pending`]
    /// state: the conversation waits for it (counted, but `last_message`
    /// moves only when it completes) until a finisher ends the wait. With
    /// `relay`, the same write says who relays it as it is written (its
    /// [`Progress`], empty), so no attach takes it over meanwhile.
    fn add_pending_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
        relay: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Completes or fails a pending reply, once: only a message still
    /// pending for `job_id` changes, so concurrent finishers write once.
    /// What it counts ([`crate::domain::outcome_tokens`]) settles on its
    /// reservation's day (the day of `at` without one).
    fn finish_reply(
        &self,
        reply: PendingReply<'_>,
        outcome: &ReplyOutcome,
        at: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<FinishResult, StoreError>> + Send;

    /// Lets go of what a reply whose conversation was deleted still held
    /// (its reservation, its place among the user's live generations):
    /// nothing else will settle it. Counts nothing.
    fn abandon_reply(
        &self,
        user: &UserId,
        reply: MessageId,
        reserved: Reservation,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends the claim for `reply` without storing it (the job failed or was
    /// never submitted) and lets its reservation go. Nothing happens if the
    /// claim is not held.
    fn release_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        reserved: Option<Reservation>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Keeps `text` as a cancelled reply's content: what a stream had
    /// written when the user stopped it (the stop stores the reply before
    /// that text is known), and counts its tokens on `day`. Only a
    /// cancelled reply without content changes; returns whether this one did.
    fn keep_cancelled_text(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
        text: &str,
        day: chrono::NaiveDate,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// The records of requests made under an `Idempotency-Key`.
pub trait Idempotency: Sync {
    /// Takes `request`'s key for a run, unless a live record of it exists
    /// (one call: a conditional put that returns the record it found). A
    /// record lives `ttl`; a running one whose holder died frees at `lock_until`.
    fn start_keyed(
        &self,
        request: KeyedRequest<'_>,
        lock_until: chrono::DateTime<chrono::Utc>,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<KeyedStart, StoreError>> + Send;

    /// Records the answer of a keyed request, for its retries.
    fn finish_keyed(
        &self,
        request: KeyedRequest<'_>,
        status: u16,
        body: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets a keyed request that stored nothing, so a retry runs again.
    fn release_keyed(
        &self,
        request: KeyedRequest<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What a user used of their daily quotas.
pub trait Quotas: Sync {
    /// What the user used on `day`.
    fn daily_usage(
        &self,
        user: &UserId,
        day: chrono::NaiveDate,
    ) -> impl Future<Output = Result<DailyUsage, StoreError>> + Send;
}

/// A reply's text while it is written, kept for clients that attach to it
/// from another instance than the one relaying (issue 27), and who relays it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// What the relay has written so far.
    pub text: String,
    /// The instance relaying it; empty when none does (it let go).
    pub relay: String,
    /// When the relay last said it is alive.
    pub beat: chrono::DateTime<chrono::Utc>,
}

/// What [`Live::take_relay`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relaying {
    /// The caller relays now; the progress so far (empty if none was saved).
    Taken(Progress),
    /// Another relay is alive: follow this.
    Held(Progress),
}

/// Feedback on replies.
pub trait Ratings: Sync {
    /// Gives (`Some`) or takes back (`None`) the user's feedback on
    /// `message`, on the active path or off it: the message as it then
    /// stands. No such message of the user's conversation is
    /// `MessageNotFound`; giving feedback on a user message or on a reply
    /// still being written is `NotRateable`.
    fn rate(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
        feedback: Option<&Feedback>,
    ) -> impl Future<Output = Result<Message, StoreError>> + Send;
}

/// Read-only share links: a copy of a conversation's active path, kept
/// under the link's id; the conversation lists its links.
pub trait Shares: Sync {
    /// Stores `copy` under `share` for the user's conversation, with the
    /// conversation's record of it. `NotFound` when the conversation is
    /// not the user's; `TooLongToShare` when the copy does not fit one item.
    fn create_share(
        &self,
        user: &UserId,
        conversation: ConversationId,
        share: &Share,
        copy: &SharedConversation,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The conversation's links, oldest first; `NotFound` when the
    /// conversation is not the user's.
    fn shares(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> impl Future<Output = Result<Vec<Share>, StoreError>> + Send;

    /// Removes a link and its copy; `ShareNotFound` when the conversation
    /// has no such link.
    fn revoke_share(
        &self,
        user: &UserId,
        conversation: ConversationId,
        share: &ShareId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What a link shows, if it exists and its conversation does.
    fn shared(
        &self,
        share: &ShareId,
    ) -> impl Future<Output = Result<Option<SharedConversation>, StoreError>> + Send;
}

/// Replies being written: their progress and who relays them from the
/// model. An item per live reply with a TTL ([`Progress`] is only needed
/// while the reply is written).
pub trait Live: Sync {
    /// Saves `progress` when `relay` holds the reply (or nobody does yet).
    /// `Ok(false)` when another relay took it over: this one must stop.
    fn save_progress(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        relay: &str,
        progress: &Progress,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The reply's progress, if any was saved (and its TTL has not passed).
    fn progress(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
    ) -> impl Future<Output = Result<Option<Progress>, StoreError>> + Send;

    /// Makes `relay` the reply's relay when none is alive: no progress
    /// saved, the last relay let go, or its beat is older than
    /// `stale_before`. One conditional write, so two callers cannot both win.
    fn take_relay(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        relay: &str,
        at: chrono::DateTime<chrono::Utc>,
        stale_before: chrono::DateTime<chrono::Utc>,
    ) -> impl Future<Output = Result<Relaying, StoreError>> + Send;
}
