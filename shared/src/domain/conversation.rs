//! A conversation, and the claim a send holds on it.

use chrono::{DateTime, Utc};

use super::{preview, ConversationId, Message, MessageId, Title};

/// A conversation as the API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The conversation's id.
    pub id: ConversationId,
    /// Its title.
    pub title: Title,
    /// A preview of its last complete message.
    pub last_message: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its last message was stored.
    pub updated_at: DateTime<Utc>,
    /// How many messages it holds.
    pub message_count: u64,
    /// The assistant reply still being generated, if any: while it is set,
    /// no new message can be sent to the conversation.
    pub pending_reply: Option<MessageId>,
    /// While a send is still waiting for `pending_reply` (before it is
    /// stored): until when its claim holds. A claim whose send died is
    /// free again after this.
    pub claimed_until: Option<DateTime<Utc>>,
}

/// A send's hold on its conversation, taken in the write that stores the
/// user's message: one generation per conversation at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The reply the send will store.
    pub reply: MessageId,
    /// When the claim lapses if the send never settles it (after the
    /// send's own deadline).
    pub until: DateTime<Utc>,
}

impl Conversation {
    /// A new conversation whose only message is `first`.
    pub fn started_with(title: Title, first: &Message) -> Self {
        Self {
            id: ConversationId::new(),
            title,
            last_message: preview(&first.content),
            created_at: first.created_at,
            updated_at: first.created_at,
            message_count: 1,
            pending_reply: None,
            claimed_until: None,
        }
    }

    /// The same conversation, held by `claim`.
    pub fn claimed(self, claim: &Claim) -> Self {
        Self {
            pending_reply: Some(claim.reply),
            claimed_until: Some(claim.until),
            ..self
        }
    }
}
