//! A message: who wrote it, its text, where it stands (complete, pending
//! with its job, failed, cancelled), and how a pending reply ends.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DomainError, MessageId, ModelId, Reservation, Usage};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's word: `user` or `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// Parses and checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        match raw {
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            _ => Err(DomainError::InvalidRole),
        }
    }
}

/// The model's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The reply's text.
    pub text: String,
    /// Token counts, when the worker reports them.
    pub usage: Option<Usage>,
}

impl Completion {
    /// The reply as stored: its first `max_chars` characters, and whether
    /// that cut it. One runaway reply must not make a conversation unstorable.
    pub fn kept(self, max_chars: usize) -> ReplyOutcome {
        let (text, truncated) = match self.text.char_indices().nth(max_chars) {
            Some((end, _)) => (self.text[..end].to_owned(), true),
            None => (self.text, false),
        };
        ReplyOutcome::Complete {
            text,
            usage: self.usage,
            truncated,
        }
    }
}

/// Where a message stands. Only assistant replies are ever pending or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageStatus {
    /// Written in full.
    Complete,
    /// The RunPod job that will produce the reply.
    Pending {
        /// The model's job.
        job_id: String,
    },
    /// A short, safe reason, shown to the user.
    Failed {
        /// The reason.
        error: String,
    },
    /// Stopped by the user; `content` is what was written before the stop.
    /// Never sent to the model as history.
    Cancelled,
}

impl MessageStatus {
    /// [`MessageStatus::Complete`]'s word, in the API and in the table.
    pub const COMPLETE: &'static str = "complete";
    /// [`MessageStatus::Pending`]'s word.
    pub const PENDING: &'static str = "pending";
    /// [`MessageStatus::Failed`]'s word.
    pub const FAILED: &'static str = "failed";
    /// [`MessageStatus::Cancelled`]'s word.
    pub const CANCELLED: &'static str = "cancelled";

    /// The status's word: `complete`, `pending`, `failed` or `cancelled`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageStatus::Complete => Self::COMPLETE,
            MessageStatus::Pending { .. } => Self::PENDING,
            MessageStatus::Failed { .. } => Self::FAILED,
            MessageStatus::Cancelled => Self::CANCELLED,
        }
    }
}

/// A user's verdict on a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rating {
    /// Thumbs up.
    Up,
    /// Thumbs down.
    Down,
}

impl Rating {
    /// The rating's word: `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "up",
            Rating::Down => "down",
        }
    }

    /// `up` or `down`, or `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "up" => Some(Rating::Up),
            "down" => Some(Rating::Down),
            _ => None,
        }
    }
}

/// Longest comment a rating may carry, in characters.
pub const FEEDBACK_COMMENT_MAX_CHARS: usize = 2_000;

/// A user's feedback on one reply: a rating, perhaps with a comment (one
/// per reply; a new one replaces it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    /// Up or down.
    pub rating: Rating,
    /// At most [`FEEDBACK_COMMENT_MAX_CHARS`] characters, never blank.
    pub comment: Option<String>,
    /// When it was given (or last replaced).
    pub updated_at: DateTime<Utc>,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The message's id (time-ordered).
    pub id: MessageId,
    /// Who wrote it.
    pub role: Role,
    /// Its text (empty while pending).
    pub content: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Token counts of a reply, when known.
    pub usage: Option<Usage>,
    /// Complete, pending or failed.
    pub status: MessageStatus,
    /// The reply was longer than the service keeps (`MAX_REPLY_CHARS`) and
    /// `content` is its beginning.
    pub truncated: bool,
    /// What a reply holds of the daily token quota until it settles.
    pub reserved: Option<Reservation>,
    /// The catalogue's model that writes (or wrote) a reply; `None` on the
    /// user's messages and on replies stored before the catalogue.
    pub model: Option<ModelId>,
    /// The message it follows: `None` for a conversation's first message.
    /// Filled on reads of the active path (and stored on messages off it).
    pub parent: Option<MessageId>,
    /// Every message with the same parent, oldest first, itself included:
    /// its versions. Filled on reads of the active path; empty otherwise.
    pub versions: Vec<MessageId>,
    /// Its children that were ever moved off the active path: what the
    /// store keeps to tell its child's versions without reading them.
    pub children: Vec<MessageId>,
    /// The user's feedback on a final reply (boxed: most messages have none).
    pub feedback: Option<Box<Feedback>>,
}

impl Message {
    /// Whether this is a reply still being generated.
    pub fn is_pending(&self) -> bool {
        matches!(self.status, MessageStatus::Pending { .. })
    }

    /// Takes a pending reply's final outcome: its text and usage, or the
    /// reason it failed.
    pub fn settle(&mut self, outcome: ReplyOutcome) {
        match outcome {
            ReplyOutcome::Complete {
                text,
                usage,
                truncated,
            } => {
                self.content = text;
                self.usage = usage;
                self.truncated = truncated;
                self.status = MessageStatus::Complete;
            }
            ReplyOutcome::Failed { error } => self.status = MessageStatus::Failed { error },
            ReplyOutcome::Cancelled { text } => {
                self.content = text;
                self.status = MessageStatus::Cancelled;
            }
        }
    }

    /// A complete message with a new id.
    pub fn new(role: Role, content: String, created_at: DateTime<Utc>) -> Self {
        Self {
            id: MessageId::new(),
            role,
            content,
            created_at,
            usage: None,
            status: MessageStatus::Complete,
            truncated: false,
            reserved: None,
            model: None,
            parent: None,
            versions: vec![],
            children: vec![],
            feedback: None,
        }
    }

    /// Whether feedback may be given on it: a reply that is not being
    /// written any more.
    pub fn takes_feedback(&self) -> bool {
        self.role == Role::Assistant && !self.is_pending()
    }
}

/// A message's versions: itself and its parent's children known off the
/// path (`known`), oldest first (ids are time-ordered), each once.
pub fn versions(own: MessageId, known: &[MessageId]) -> Vec<MessageId> {
    let mut all: Vec<MessageId> = known.iter().copied().chain([own]).collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The active path's messages after a fork, oldest first, made ready to
/// leave it: each knows its parent (`fork` for the first) and its child on
/// the path among its children, so every version stays reachable.
pub fn leaving(fork: Option<MessageId>, suffix: &[Message]) -> Vec<Message> {
    let mut off = suffix.to_vec();
    let mut parent = fork;
    for (m, next) in off
        .iter_mut()
        .zip(suffix.iter().skip(1).map(Some).chain([None]))
    {
        m.parent = parent;
        parent = Some(m.id);
        if let Some(next) = next.filter(|n| !m.children.contains(&n.id)) {
            m.children.push(next.id);
        }
    }
    off
}

/// Most messages one regenerate, edit or switch moves on or off the active
/// path: the moves share one DynamoDB transaction with the write that
/// admits the send (at most 100 actions, two per move).
pub const MAX_MOVED: usize = 40;

/// How a pending reply ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyOutcome {
    /// The reply was generated.
    Complete {
        /// The reply.
        text: String,
        /// Its token counts, when known.
        usage: Option<Usage>,
        /// `text` is the beginning of a longer reply.
        truncated: bool,
    },
    /// The job failed or expired.
    Failed {
        /// A short, safe reason, shown to the user.
        error: String,
    },
    /// The user stopped it.
    Cancelled {
        /// What was written before the stop (possibly nothing).
        text: String,
    },
}
