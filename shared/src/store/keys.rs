//! Every key format of the table, and nothing else.
//!
//! ```text
//! item          PK                         SK             GSI1PK        GSI1SK
//! conversation  USER#<user>#CONV#<conv>    ~CONV          USER#<user>   <updated_at>#<conv>
//! message       USER#<user>#CONV#<conv>    MSG#<msg v7>   -             -   (on the active path)
//! other version USER#<user>#CONV#<conv>    ALT#<msg v7>   -             -   (off it)
//! daily usage   USER#<user>#USAGE          DAY#<yyyy-mm-dd>  -          -   (TTL: expires_at)
//! generations   USER#<user>#USAGE          LIVE           -             -   (reply ids in the making)
//! request key   USER#<user>#IDEM           KEY#<Idempotency-Key>  -     -   (TTL: expires_at)
//! progress      USER#<user>#CONV#<conv>    LIVE#<msg>     -             -   (TTL: expires_at; a reply being written)
//! rated reply   (a message, as above)                     RATING#<yyyy-mm-dd>  <rated_at>#<msg>
//! share link    USER#<user>#CONV#<conv>    LINK#<share>   -             -   (the conversation's record of a link)
//! shared copy   SHARE#<share>              SHARE          -             -   (what the public link shows)
//! ```
//!
//! The owner is part of every partition key, so a read or write keyed for
//! one user cannot touch another user's items, whatever id it names. A
//! conversation and its messages share a partition; message sort keys are
//! UUID v7 and so sort by time; the conversation's sort key sorts after
//! all of them, so one newest-first Query reads the conversation and its
//! latest messages together. Only conversation items carry `USER#` GSI1
//! keys, so listing a user's conversations never reads a message; a rated
//! reply carries `RATING#<day>` ones, so an operator lists a day's ratings
//! with one Query of the index (README, "Feedback").
//!
//! A conversation is a tree (regenerate and edit add versions), but only
//! its active path is keyed `MSG#`: every page and every history read is
//! then the one newest-first Query it was before branches, whatever lies
//! off the path. Messages off the path are keyed `ALT#` and carry their
//! parent; a regenerate, edit or switch moves the messages that leave or
//! join the path between the two prefixes (the README says why).

use chrono::{DateTime, Utc};

use crate::domain::{format_timestamp, ConversationId, MessageId, UserId};

/// The partition key attribute.
pub const PK: &str = "PK";
/// The sort key attribute.
pub const SK: &str = "SK";
/// The index that lists a user's conversations.
pub const GSI1: &str = "GSI1";
/// GSI1's partition key attribute.
pub const GSI1PK: &str = "GSI1PK";
/// GSI1's sort key attribute.
pub const GSI1SK: &str = "GSI1SK";

/// `~` sorts after every `MSG#…` key (see the module docs).
pub const CONVERSATION_SK: &str = "~CONV";
/// What every message sort key starts with.
pub const MESSAGE_SK_PREFIX: &str = "MSG#";

/// The partition of a conversation and its messages.
pub fn conversation_pk(user: &UserId, conversation: ConversationId) -> String {
    format!("USER#{user}#CONV#{conversation}")
}

/// The owner and conversation named by a conversation partition key (as a
/// DynamoDB stream record carries it). `None` for any other key.
pub fn parse_conversation_pk(pk: &str) -> Option<(UserId, ConversationId)> {
    // Conversation ids are UUIDs and hold no '#', so the last "#CONV#" splits.
    let rest = pk.strip_prefix("USER#")?;
    let (user, conversation) = rest.rsplit_once("#CONV#")?;
    Some((
        UserId::parse(user).ok()?,
        ConversationId::parse(conversation).ok()?,
    ))
}

/// A message's sort key.
pub fn message_sk(message: MessageId) -> String {
    format!("{MESSAGE_SK_PREFIX}{message}")
}

/// What every off-path message's sort key starts with; sorts before `MSG#`.
pub const OFF_PATH_SK_PREFIX: &str = "ALT#";

/// The sort key of a message off the active path.
pub fn off_path_sk(message: MessageId) -> String {
    format!("{OFF_PATH_SK_PREFIX}{message}")
}

/// The sort key of a conversation's record of a share link: it sorts
/// before the active path (`MSG#`), so the one Query that reads the
/// conversation with its newest page never meets it.
pub fn share_sk(share: &str) -> String {
    format!("{SHARE_SK_PREFIX}{share}")
}

/// What every share link record's sort key starts with.
pub const SHARE_SK_PREFIX: &str = "LINK#";

/// The partition of a shared copy: the link's id alone, so the public read
/// needs no user (the copy names its owner and conversation).
pub fn shared_copy_pk(share: &str) -> String {
    format!("SHARE#{share}")
}

/// The sort key of a shared copy.
pub const SHARED_COPY_SK: &str = "SHARE";

/// The sort key of a reply's progress while it is written (TTL:
/// `expires_at`). `LIVE#` sorts between `ALT#` and `MSG#`: no page of the
/// path (`SK >= MSG#`) meets it, and a delete's purge (`SK < ~CONV`) removes it.
pub fn live_sk(reply: MessageId) -> String {
    format!("{LIVE_SK_PREFIX}{reply}")
}

/// What every progress item's sort key starts with.
pub const LIVE_SK_PREFIX: &str = "LIVE#";

/// The partition of a user's daily usage counters.
pub fn usage_pk(user: &UserId) -> String {
    format!("USER#{user}#USAGE")
}

/// The sort key of the item listing a user's replies in the making (in
/// the usage partition: one item per user, never per day).
pub const LIVE_SK: &str = "LIVE";

/// The sort key of one UTC day's counters.
pub fn usage_sk(day: chrono::NaiveDate) -> String {
    format!("DAY#{}", day.format("%Y-%m-%d"))
}

/// The partition of a user's idempotency records.
pub fn idempotency_pk(user: &UserId) -> String {
    format!("USER#{user}#IDEM")
}

/// The sort key of the record of one `Idempotency-Key`.
pub fn idempotency_sk(key: &str) -> String {
    format!("KEY#{key}")
}

/// GSI1's partition of a user's conversations.
pub fn user_conversations_pk(user: &UserId) -> String {
    format!("USER#{user}")
}

/// Fixed-width timestamp first, so the index orders by `updated_at`; the id
/// keeps two conversations updated in the same millisecond apart.
pub fn updated_sk(updated_at: DateTime<Utc>, conversation: ConversationId) -> String {
    format!("{}#{conversation}", format_timestamp(updated_at))
}

/// GSI1's partition of the replies rated on `at`'s day (UTC).
pub fn ratings_pk(at: DateTime<Utc>) -> String {
    format!("RATING#{}", at.format("%Y-%m-%d"))
}

/// A rated reply in its day's partition, in the order they were rated.
pub fn rated_sk(at: DateTime<Utc>, message: MessageId) -> String {
    format!("{}#{message}", format_timestamp(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_timestamp;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn key_formats() {
        let c = ConversationId::parse("1f0e8d7c-6b5a-4948-8372-6150a4b3c2d1").unwrap();
        assert_eq!(
            conversation_pk(&user("alice"), c),
            "USER#alice#CONV#1f0e8d7c-6b5a-4948-8372-6150a4b3c2d1"
        );
        assert_eq!(user_conversations_pk(&user("alice")), "USER#alice");
        let t = parse_timestamp("2025-12-27T20:00:00Z").unwrap();
        assert_eq!(
            updated_sk(t, c),
            "2025-12-27T20:00:00.000Z#1f0e8d7c-6b5a-4948-8372-6150a4b3c2d1"
        );
    }

    #[test]
    fn conversation_keys_parse_back() {
        let c = ConversationId::new();
        for name in ["alice", "a#CONV#b", "user with spaces"] {
            let pk = conversation_pk(&user(name), c);
            assert_eq!(parse_conversation_pk(&pk), Some((user(name), c)));
        }
        assert_eq!(parse_conversation_pk("USER#alice"), None);
        assert_eq!(parse_conversation_pk("USER#alice#CONV#not-a-uuid"), None);
        assert_eq!(
            parse_conversation_pk("OTHER#x#CONV#1f0e8d7c-6b5a-4948-8372-6150a4b3c2d1"),
            None
        );
    }

    #[test]
    fn message_keys_sort_in_creation_order() {
        let ids: Vec<_> = (0..100).map(|_| MessageId::new()).collect();
        let keys: Vec<_> = ids.iter().map(|m| message_sk(*m)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        // The conversation item comes first in a newest-first Query.
        assert!(keys.iter().all(|k| k.as_str() < CONVERSATION_SK));
        // Off-path versions sort before every message on the path, so a
        // newest-first page of the path never meets one.
        let off: Vec<_> = ids.iter().map(|m| off_path_sk(*m)).collect();
        assert!(off.iter().all(|o| keys.iter().all(|k| o < k)));
    }

    #[test]
    fn users_whose_ids_share_a_prefix_get_distinct_partitions() {
        let c = ConversationId::new();
        assert_ne!(
            conversation_pk(&user("a"), c),
            conversation_pk(&user("a#CONV"), c)
        );
        assert_ne!(
            user_conversations_pk(&user("a")),
            user_conversations_pk(&user("a#"))
        );
    }

    #[test]
    fn later_updates_sort_after_earlier_ones() {
        let c = ConversationId::new();
        let a = updated_sk(parse_timestamp("2025-12-27T20:00:00.5Z").unwrap(), c);
        let b = updated_sk(parse_timestamp("2025-12-27T20:00:01Z").unwrap(), c);
        assert!(a < b);
    }
}
