//! The identifiers: a user (the JWT's `sub`), a conversation (UUID v4), a
//! message (UUID v7, time-ordered).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DomainError;

/// The authenticated caller: the JWT's `sub`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl UserId {
    /// Longest `sub` we accept; it becomes part of every key the user owns.
    pub const MAX_LEN: usize = 256;

    /// Parses and checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN || raw.chars().any(char::is_control) {
            return Err(DomainError::InvalidUserId);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A conversation id (a UUID; v4 for new conversations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ConversationId(Uuid);

impl ConversationId {
    /// A new, time-ordered id (UUID v7).
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses and checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| DomainError::InvalidConversationId)
    }
}

impl Default for ConversationId {
    fn default() -> Self {
        Self::new()
    }
}

impl TryFrom<String> for ConversationId {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ConversationId> for String {
    fn from(value: ConversationId) -> Self {
        value.to_string()
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A message id: a UUID v7, so ids sort by creation time and a message's
/// sort key alone keeps a conversation in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A new, time-ordered id (UUID v7).
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses and checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| DomainError::InvalidMessageId)
    }

    /// When the id was made (a UUID v7 carries its millisecond).
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}
