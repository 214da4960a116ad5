//! Domain types. Fields are private and every constructor validates, so a
//! value of one of these types is known to be well formed wherever it goes.
//!
//! - `ids`: user, conversation and message identifiers.
//! - `text`: a message's content, a title, the list preview.
//! - `time`: timestamps as stored and served.
//! - `conversation`: a conversation and a send's claim on it.
//! - `message`: a message, its status, how a pending reply ends.
//! - `settings`: a conversation's model, instructions and sampling, and changes to them.
//! - `usage`: token counts, reservations and settlements.

mod conversation;
mod ids;
mod message;
mod settings;
mod share;
mod text;
mod time;
mod usage;

pub use conversation::{Claim, Conversation, ConversationState};
pub use ids::{ConversationId, MessageId, UserId};
pub use message::{
    leaving, versions, Completion, Feedback, Message, MessageStatus, Rating, ReplyOutcome, Role,
    FEEDBACK_COMMENT_MAX_CHARS, MAX_MOVED,
};
pub use settings::{
    Change, ModelId, Settings, SettingsError, SettingsPatch, INSTRUCTIONS_MAX_CHARS,
    SETTINGS_FIELDS,
};
pub use share::{Share, ShareId, SharedConversation, SharedMessage};
pub use text::{preview, MessageContent, Title, PREVIEW_MAX_CHARS};
pub use time::{format_timestamp, parse_timestamp};
pub use usage::{
    message_tokens_estimate, outcome_tokens, tokens_used, Reservation, Settlement, TokenBounds,
    Usage, UsageSum, CHARS_PER_TOKEN, TEMPLATE_TOKENS_ONCE, TEMPLATE_TOKENS_PER_MESSAGE,
};

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
        assert_eq!(c.state, ConversationState::Free);
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
