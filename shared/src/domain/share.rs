//! A read-only share link: a copy of a conversation's active path as it
//! was when the link was made, readable by anyone holding the link.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{format_timestamp, parse_timestamp, Conversation, Message, MessageStatus, Role};

/// A link's id: 128 random bits, URL-safe (22 characters of base64url).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShareId(String);

const SHARE_ID_BYTES: usize = 16;
const SHARE_ID_CHARS: usize = 22;

impl ShareId {
    /// A new id from the system's secure random source.
    pub fn new() -> Self {
        let mut bytes = [0u8; SHARE_ID_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random source");
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// `raw` if it has the shape of an id this service makes (anything
    /// else names no link, and is never looked up).
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == SHARE_ID_CHARS && URL_SAFE_NO_PAD.decode(raw).is_ok())
            .then(|| Self(raw.to_owned()))
    }

    /// The id as it appears in the link.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ShareId {
    fn default() -> Self {
        Self::new()
    }
}

/// A link, as its conversation lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// Its id.
    pub id: ShareId,
    /// When it was made: what it shows is the conversation as it was then.
    pub created_at: DateTime<Utc>,
}

/// One message of a shared copy: who wrote it, what, and when; nothing
/// else (no ids, no settings, no feedback, no user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedMessage {
    /// `user` or `assistant`.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// When it was written.
    #[serde(with = "timestamp")]
    pub timestamp: DateTime<Utc>,
}

/// What a link shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConversation {
    /// The conversation's title when the link was made.
    pub title: String,
    /// When the link was made.
    pub created_at: DateTime<Utc>,
    /// The active path then, oldest first: every message with text that is
    /// not a failed or unfinished reply.
    pub messages: Vec<SharedMessage>,
}

impl SharedConversation {
    /// The copy of `conversation`'s active `path` a link made `at` shows.
    pub fn of(conversation: &Conversation, path: &[Message], at: DateTime<Utc>) -> Self {
        let shown = |m: &&Message| {
            !m.content.is_empty()
                && matches!(m.status, MessageStatus::Complete | MessageStatus::Cancelled)
        };
        Self {
            title: conversation.title.as_str().to_owned(),
            created_at: at,
            messages: path
                .iter()
                .filter(shown)
                .map(|m| SharedMessage {
                    role: m.role,
                    content: m.content.clone(),
                    timestamp: m.created_at,
                })
                .collect(),
        }
    }
}

/// Timestamps in the API's one format.
mod timestamp {
    use super::*;

    pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(*t))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        parse_timestamp(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_random_bits_url_safe_and_parse_back() {
        let (a, b) = (ShareId::new(), ShareId::new());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 22);
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(ShareId::parse(a.as_str()), Some(a));
        for bad in ["", "short", "has/slash-and-is-22ch", &"A".repeat(23)] {
            assert_eq!(ShareId::parse(bad), None, "{bad}");
        }
    }
}
