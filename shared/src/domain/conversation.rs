//! A conversation, and the claim a send holds on it.

use chrono::{DateTime, Utc};

use super::{preview, ConversationId, Message, MessageId, Settings, Title};

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
    /// Whether a reply is in the making: while one is, no new message can
    /// be sent to the conversation.
    pub state: ConversationState,
    /// Its model, instructions and sampling values.
    pub settings: Settings,
    /// First messages that were moved off the active path (edits of the
    /// first message): with the one on the path, the first message's versions.
    pub roots: Vec<MessageId>,
}

/// Where a conversation stands: one generation at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConversationState {
    /// No reply in the making: a send may start one.
    Free,
    /// A send stored its question and holds the conversation for `reply`,
    /// which is not stored yet, until `until` (after the send's own
    /// deadline: a claim whose send died is free again after it).
    Claimed {
        /// The reply the send will store.
        reply: MessageId,
        /// When the claim lapses.
        until: DateTime<Utc>,
    },
    /// `reply` is stored pending with its job; whoever finishes it (the
    /// webhook, a read, a stop) frees the conversation.
    Waiting {
        /// The pending reply.
        reply: MessageId,
    },
}

impl ConversationState {
    /// The reply the conversation waits for, claimed or pending.
    pub fn reply(self) -> Option<MessageId> {
        match self {
            Self::Free => None,
            Self::Claimed { reply, .. } | Self::Waiting { reply } => Some(reply),
        }
    }
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
            state: ConversationState::Free,
            settings: Settings::default(),
            roots: vec![],
        }
    }

    /// The same conversation, held by `claim`.
    pub fn claimed(self, claim: &Claim) -> Self {
        Self {
            state: ConversationState::Claimed {
                reply: claim.reply,
                until: claim.until,
            },
            ..self
        }
    }
}
