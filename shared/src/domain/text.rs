//! What users write and what lists show of it: a message's content, a
//! conversation's title, and the one-line preview.

use super::DomainError;

/// A user's message: not blank, at most `max_chars` characters. The text is
/// kept exactly as written (indentation in a pasted snippet matters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent(String);

impl MessageContent {
    /// A message that is not blank and has at most `max_chars` characters.
    pub fn parse(raw: String, max_chars: usize) -> Result<Self, DomainError> {
        if raw.trim().is_empty() {
            return Err(DomainError::EmptyMessage);
        }
        let chars = raw.chars().count();
        if chars > max_chars {
            return Err(DomainError::MessageTooLong { chars, max_chars });
        }
        Ok(Self(raw))
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A conversation's title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    /// Longest title made from a first message.
    pub const FROM_MESSAGE_MAX_CHARS: usize = 60;

    /// The first user message, white space folded, cut to at most 60
    /// characters at a word boundary (a single longer word is cut hard).
    pub fn from_first_message(message: &MessageContent) -> Self {
        Self(cut_at_word(
            &fold_whitespace(message.as_str()),
            Self::FROM_MESSAGE_MAX_CHARS,
        ))
    }

    /// Longest title a user may set.
    pub const MAX_CHARS: usize = 200;

    /// A title the user chose: 1 to 200 characters as sent (so the API
    /// contract's `maxLength` is exact), one line, not blank; stored trimmed.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let title = raw.trim();
        let too_long = raw.chars().count() > Self::MAX_CHARS;
        if title.is_empty() || too_long || title.chars().any(char::is_control) {
            return Err(DomainError::InvalidTitle);
        }
        Ok(Self(title.to_owned()))
    }

    /// A title read back from storage.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest `last_message` preview in conversation listings.
pub const PREVIEW_MAX_CHARS: usize = 120;

/// A one-line preview of a message for conversation listings: white space
/// folded, cut at a word boundary, with an ellipsis when something was cut.
pub fn preview(text: &str) -> String {
    let folded = fold_whitespace(text);
    if folded.chars().count() <= PREVIEW_MAX_CHARS {
        return folded;
    }
    let mut cut = cut_at_word(&folded, PREVIEW_MAX_CHARS - 1);
    cut.push('…');
    cut
}

/// One line: runs of white space become one space; other control
/// characters (a terminal escape, a bell) are dropped.
fn fold_whitespace(text: &str) -> String {
    let visible: String = text
        .chars()
        .filter(|c| c.is_whitespace() || !c.is_control())
        .collect();
    visible.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` (already folded) cut to at most `max` characters, preferring the
/// last space at or before the limit.
fn cut_at_word(text: &str, max: usize) -> String {
    let Some((hard_end, next)) = text.char_indices().nth(max) else {
        return text.to_owned();
    };
    if next == ' ' {
        return text[..hard_end].to_owned();
    }
    match text[..hard_end].rfind(' ') {
        Some(space) if space > 0 => text[..space].trim_end().to_owned(),
        _ => text[..hard_end].to_owned(),
    }
}
