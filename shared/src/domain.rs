//! Domain types. Fields are private and every constructor validates, so a
//! value of one of these types is known to be well formed wherever it goes.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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

/// RFC 3339 in UTC with a `Z` and fixed millisecond digits, so stored
/// timestamps also sort correctly as strings.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An RFC 3339 timestamp, in UTC.
pub fn parse_timestamp(raw: &str) -> Result<DateTime<Utc>, DomainError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| DomainError::InvalidTimestamp)
}

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

/// Characters per token when a worker reports no usage: the usual rule of
/// thumb for English text with the common tokenizers.
pub const CHARS_PER_TOKEN: u64 = 4;

/// The tokens a reply counts for in a user's quota: what the worker
/// reported (prompt and reply), or, without a report, one per
/// [`CHARS_PER_TOKEN`] characters of the reply.
pub fn tokens_used(text: &str, usage: Option<Usage>) -> u64 {
    match usage {
        Some(u) => u.input_tokens.saturating_add(u.output_tokens),
        None => (text.chars().count() as u64).div_ceil(CHARS_PER_TOKEN),
    }
}

/// The tokens a reply holds of its user's daily token quota from the send
/// that admitted it until it settles: what the job could count at most
/// (the prompt's upper bound and the reply's `max_tokens`), so parallel
/// sends cannot all pass a quota that each alone is under. Kept with the
/// pending reply, since its settler may be another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The UTC day the send was admitted on, which the reply counts on.
    pub day: chrono::NaiveDate,
    /// What is held until the reply settles.
    pub tokens: u64,
    /// The prompt's estimate ([`CHARS_PER_TOKEN`]), which a stopped reply
    /// counts (with what it wrote) since the worker reported nothing.
    pub prompt: u64,
    /// The reply was admitted as one of its user's live generations (under
    /// `USER_MAX_CONCURRENT_GENERATIONS`), which its settlement ends.
    pub live: bool,
}

/// What a job for a history can count: [`Reservation`]'s figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBounds {
    /// The most tokens the job can count, prompt and reply.
    pub most: u64,
    /// The prompt's estimate.
    pub prompt: u64,
}

/// How a reply's settlement changes its day's counts: `tokens` is what it
/// counts, `held` what the quota check sees (counted tokens plus the
/// reservations of replies not settled yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settlement {
    /// The day.
    pub day: chrono::NaiveDate,
    /// Added to the day's tokens.
    pub tokens: u64,
    /// Added to the day's held tokens (negative: a reservation let go).
    pub held: i64,
}

impl Settlement {
    /// A reply that counts `tokens` and lets its reservation go; counted on
    /// the reservation's day, or on `day` for a reply admitted without one.
    pub fn of(reserved: Option<Reservation>, tokens: u64, day: chrono::NaiveDate) -> Self {
        let (day, reserved) = reserved.map_or((day, 0), |r| (r.day, r.tokens));
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Self {
            day,
            tokens,
            held: signed(tokens).saturating_sub(signed(reserved)),
        }
    }

    /// Whether it changes nothing (no write needed).
    pub fn is_empty(&self) -> bool {
        self.tokens == 0 && self.held == 0
    }
}

/// What a reply that ended with `outcome` counts: a complete one what the
/// worker reported (or its estimate), a stopped one its prompt's estimate
/// (its text, written before the stop, is counted when the stream that
/// wrote it keeps it), a failed one nothing.
pub fn outcome_tokens(outcome: &ReplyOutcome, reserved: Option<Reservation>) -> u64 {
    match outcome {
        ReplyOutcome::Complete { text, usage, .. } => tokens_used(text, *usage),
        ReplyOutcome::Cancelled { text } => {
            reserved.map_or(0, |r| r.prompt) + tokens_used(text, None)
        }
        ReplyOutcome::Failed { .. } => 0,
    }
}

impl Usage {
    /// Both counts added, or `None` if either overflows (a worker's
    /// numbers are not trusted to be sane).
    pub fn checked_add(self, other: Usage) -> Option<Usage> {
        Some(Usage {
            input_tokens: self.input_tokens.checked_add(other.input_tokens)?,
            output_tokens: self.output_tokens.checked_add(other.output_tokens)?,
        })
    }
}

/// Token counts reported piece by piece (the entries of an output, a
/// stream's chunks), counted once per reply: unknown until a piece reports
/// some.
///
/// Workers report in one of two ways, told apart by the reports
/// themselves:
///
/// - **running totals**: RunPod's vLLM worker (`worker-vllm`,
///   `src/engine.py`, `_generate_vllm`) puts `{"input": <prompt tokens>,
///   "output": <output tokens so far>}` on every streamed batch: the prompt
///   the same each time, the output never going down. The reply's usage is
///   the last report; adding them would count the prompt once per batch.
/// - **deltas**: each piece reports its own tokens (the prompt, if at all,
///   on one piece only); the reply's usage is their sum.
///
/// Reports are taken as running totals while every one repeats the first
/// one's non-zero prompt count and none has fewer output tokens than the
/// one before; any other report makes them deltas. One report is both.
/// A sum that overflows is unknown for good (the numbers are not trusted to
/// be sane); running totals do not add and cannot overflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageSum {
    sum: Option<Usage>,
    overflowed: bool,
    last: Option<Usage>,
    /// Every report so far could be a running total.
    running: bool,
}

impl UsageSum {
    /// Takes what one more piece reports.
    pub fn add(&mut self, more: Option<Usage>) {
        let Some(more) = more else { return };
        self.running = match self.last {
            None => more.input_tokens > 0,
            Some(last) => {
                self.running
                    && more.input_tokens == last.input_tokens
                    && more.output_tokens >= last.output_tokens
            }
        };
        self.last = Some(more);
        if !self.overflowed {
            self.sum = self.sum.unwrap_or_default().checked_add(more);
            self.overflowed = self.sum.is_none();
        }
    }

    /// The reply's usage from the reports so far.
    pub fn total(&self) -> Option<Usage> {
        if self.running {
            return self.last;
        }
        self.sum
    }
}

/// Token counts reported by the model worker, when it reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// Tokens of the prompt.
    pub input_tokens: u64,
    /// Tokens of the reply.
    pub output_tokens: u64,
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
        }
    }
}

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

/// A value that breaks a domain rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    /// A user id (a token's `sub`) that is empty, too long or has control characters.
    #[error("the user id is empty, too long or has control characters")]
    InvalidUserId,
    /// A conversation id that is not a UUID.
    #[error("conversation_id is not a UUID")]
    InvalidConversationId,
    /// A message id that is not a UUID.
    #[error("message id is not a UUID")]
    InvalidMessageId,
    /// A message that is empty or only white space.
    #[error("the message is empty")]
    EmptyMessage,
    #[error("the message has {chars} characters; the limit is {max_chars}")]
    /// A message over the length limit.
    MessageTooLong {
        /// The message's length.
        chars: usize,
        /// The limit.
        max_chars: usize,
    },
    /// A stored role that is neither `user` nor `assistant`.
    #[error("unknown role")]
    InvalidRole,
    /// A timestamp that is not RFC 3339.
    #[error("invalid timestamp")]
    InvalidTimestamp,
    /// A title that is blank, too long or spans several lines.
    #[error("the title must be 1 to 200 characters on one line")]
    InvalidTitle,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(s: &str) -> MessageContent {
        MessageContent::parse(s.to_owned(), 16_000).unwrap()
    }

    #[test]
    fn blank_messages_are_rejected() {
        assert_eq!(
            MessageContent::parse(String::new(), 10),
            Err(DomainError::EmptyMessage)
        );
        assert_eq!(
            MessageContent::parse(" \n\t ".into(), 10),
            Err(DomainError::EmptyMessage)
        );
    }

    #[test]
    fn message_length_counts_characters_not_bytes() {
        assert!(MessageContent::parse("é".repeat(10), 10).is_ok());
        assert_eq!(
            MessageContent::parse("é".repeat(11), 10),
            Err(DomainError::MessageTooLong {
                chars: 11,
                max_chars: 10
            })
        );
    }

    #[test]
    fn message_keeps_its_text_verbatim() {
        assert_eq!(content("  indented\n").as_str(), "  indented\n");
    }

    #[test]
    fn short_title_is_the_whole_message() {
        assert_eq!(
            Title::from_first_message(&content("How do I organize patient files?")).as_str(),
            "How do I organize patient files?"
        );
    }

    #[test]
    fn long_title_is_cut_at_a_word_boundary() {
        let msg = content(
            "How do I organize patient files so that every doctor in the practice finds them quickly?",
        );
        let title = Title::from_first_message(&msg);
        assert_eq!(
            title.as_str(),
            "How do I organize patient files so that every doctor in the"
        );
        assert!(title.as_str().chars().count() <= 60);
    }

    #[test]
    fn title_cut_exactly_at_a_space_keeps_the_full_sixty() {
        let sixty = "a".repeat(29) + " " + &"b".repeat(30);
        let msg = content(&(sixty.clone() + " tail"));
        assert_eq!(Title::from_first_message(&msg).as_str(), sixty);
    }

    #[test]
    fn one_long_word_is_cut_hard() {
        let msg = content(&"x".repeat(100));
        assert_eq!(Title::from_first_message(&msg).as_str(), "x".repeat(60));
    }

    #[test]
    fn title_folds_newlines_and_handles_multibyte_text() {
        let msg = content(&format!("Grüße\n\n{}", "ü".repeat(80)));
        let title = Title::from_first_message(&msg);
        assert_eq!(title.as_str(), "Grüße");
    }

    #[test]
    fn preview_marks_a_cut() {
        let long = "word ".repeat(100);
        let p = preview(&long);
        assert!(p.ends_with('…'));
        assert!(p.chars().count() <= PREVIEW_MAX_CHARS);
        assert_eq!(preview("short\nreply"), "short reply");
    }

    #[test]
    fn chosen_titles_are_trimmed_and_bounded() {
        assert_eq!(
            Title::parse("  Patient files ").unwrap().as_str(),
            "Patient files"
        );
        assert_eq!(Title::parse("t").unwrap().as_str(), "t");
        assert!(Title::parse(&"é".repeat(200)).is_ok());
        assert_eq!(
            Title::parse(&"é".repeat(201)),
            Err(DomainError::InvalidTitle)
        );
        assert_eq!(Title::parse("   "), Err(DomainError::InvalidTitle));
        // The limit counts what was sent, surrounding white space included.
        let padded = format!(" {} ", "é".repeat(199));
        assert_eq!(Title::parse(&padded), Err(DomainError::InvalidTitle));
        assert!(Title::parse(&format!(" {}", "é".repeat(199))).is_ok());
        assert_eq!(Title::parse("two\nlines"), Err(DomainError::InvalidTitle));
    }

    #[test]
    fn user_ids_are_checked() {
        assert!(UserId::parse("user-1").is_ok());
        assert_eq!(UserId::parse(""), Err(DomainError::InvalidUserId));
        assert_eq!(UserId::parse("a\nb"), Err(DomainError::InvalidUserId));
        assert_eq!(
            UserId::parse(&"u".repeat(257)),
            Err(DomainError::InvalidUserId)
        );
    }

    #[test]
    fn conversation_ids_must_be_uuids() {
        assert!(ConversationId::parse("1f0e8d7c-6b5a-4948-8372-6150a4b3c2d1").is_ok());
        assert_eq!(
            ConversationId::parse("not-a-uuid"),
            Err(DomainError::InvalidConversationId)
        );
    }

    #[test]
    fn message_ids_sort_by_creation() {
        let a = MessageId::new();
        let b = MessageId::new();
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn timestamps_are_utc_with_z() {
        let t = parse_timestamp("2025-12-27T21:00:00+01:00").unwrap();
        assert_eq!(format_timestamp(t), "2025-12-27T20:00:00.000Z");
    }

    #[test]
    fn a_started_conversation_holds_its_first_message() {
        let at = parse_timestamp("2026-01-02T03:04:05Z").unwrap();
        let first = Message::new(Role::User, "How do I organize\n patient files?".into(), at);
        let c = Conversation::started_with(Title::from_stored("Files".into()), &first);
        assert_eq!(c.title.as_str(), "Files");
        assert_eq!(c.last_message, "How do I organize patient files?");
        assert_eq!((c.created_at, c.updated_at), (at, at));
        assert_eq!(c.message_count, 1);
        assert_eq!(c.pending_reply, None);
        assert_ne!(c.id, Conversation::started_with(c.title.clone(), &first).id);
    }

    #[test]
    fn titles_and_previews_drop_control_characters() {
        let raw = "Files\u{7} for \u{1b}[31mpatients\u{0}\nplease".to_owned();
        let content = MessageContent::parse(raw, 100).unwrap();
        let title = Title::from_first_message(&content);
        assert_eq!(title.as_str(), "Files for [31mpatients please");
        assert_eq!(preview(content.as_str()), title.as_str());
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
        Some(Usage {
            input_tokens,
            output_tokens,
        })
    }

    #[test]
    fn running_totals_count_once_as_the_vllm_worker_reports_them() {
        // worker-vllm: a 3 000-token prompt, 1 000 tokens out in 20 batches,
        // each batch saying the prompt and the output so far.
        let mut sum = UsageSum::default();
        for batch in 1..=20 {
            sum.add(usage(3_000, batch * 50));
        }
        assert_eq!(sum.total(), usage(3_000, 1_000));
    }

    #[test]
    fn deltas_are_added() {
        let mut sum = UsageSum::default();
        for (input, output) in [(12, 3), (0, 4), (0, 5)] {
            sum.add(usage(input, output));
        }
        assert_eq!(sum.total(), usage(12, 12));
        // Per-piece counts that repeat the prompt but shrink are deltas too.
        let mut sum = UsageSum::default();
        sum.add(usage(7, 5));
        sum.add(usage(7, 2));
        assert_eq!(sum.total(), usage(14, 7));
    }

    #[test]
    fn one_report_is_the_reply_and_none_is_unknown() {
        let mut sum = UsageSum::default();
        assert_eq!(sum.total(), None);
        sum.add(None);
        assert_eq!(sum.total(), None);
        sum.add(usage(9, 4));
        sum.add(None);
        assert_eq!(sum.total(), usage(9, 4));
    }
}
