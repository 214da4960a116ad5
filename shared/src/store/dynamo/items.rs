//! The table's items as private structs, mapped to and from the domain
//! types with `serde_dynamo`, so the table layout can change without
//! touching the domain. Every attribute name a condition or update
//! expression uses is a constant here.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{
    domain::{
        format_timestamp, parse_timestamp, Change, Conversation, ConversationId, ConversationState,
        Feedback, Message, MessageId, MessageStatus, ModelId, Rating, Reservation, Role, Settings,
        SettingsPatch, Title, Usage, UserId,
    },
    store::{keys, StoreError},
};

/// An item as the SDK hands it over.
pub(super) type Item = HashMap<String, AttributeValue>;

/// Attribute names used in expressions (the key attributes are in [`keys`]).
pub(super) mod attr {
    /// Every item's owner, checked in every conditional write.
    pub const USER_ID: &str = "user_id";
    /// The reply a conversation is waiting for.
    pub const PENDING_REPLY: &str = "pending_reply";
    /// Until when a running send's claim on the conversation holds.
    pub const CLAIMED_UNTIL: &str = "claimed_until";
    /// A message's status word; absent when complete.
    pub const STATUS: &str = "status";
    /// A pending message's job.
    pub const JOB_ID: &str = "job_id";
    /// A failed message's reason.
    pub const ERROR: &str = "error";
    /// Set on a reply cut to `MAX_REPLY_CHARS`.
    pub const TRUNCATED: &str = "truncated";
    /// A usage item's sends of the day.
    pub const MESSAGES: &str = "messages";
    /// A usage item's tokens of the day.
    pub const TOKENS: &str = "tokens";
    /// A usage item's tokens plus the reservations of replies not settled
    /// yet: what a send's quota condition reads (a condition cannot add
    /// two attributes, so the sum is kept as one).
    pub const HELD: &str = "held_tokens";
    /// The live-generations item's set of reply ids in the making.
    pub const LIVE: &str = "live";
    /// When DynamoDB's TTL removes the item (epoch seconds).
    pub const EXPIRES_AT: &str = "expires_at";
    /// An idempotency record's digest of its request body.
    pub const BODY_HASH: &str = "body_hash";
    /// An idempotency record's `running` or `done`.
    pub const STATE: &str = "state";
    /// Until when a running idempotency record's request holds its key.
    pub const LOCK_UNTIL: &str = "lock_until";
    /// The first answer's status, once done.
    pub const RESPONSE_STATUS: &str = "response_status";
    /// The first answer's body, once done.
    pub const RESPONSE_BODY: &str = "response_body";
    /// A conversation's chosen model; a reply's model.
    pub const MODEL: &str = "model";
    /// A conversation's instructions.
    pub const INSTRUCTIONS: &str = "instructions";
    /// A conversation's temperature.
    pub const TEMPERATURE: &str = "temperature";
    /// A conversation's nucleus.
    pub const TOP_P: &str = "top_p";
    /// A conversation's reply token limit.
    pub const MAX_TOKENS: &str = "max_tokens";
    /// A message's children that were ever moved off the active path (a
    /// string set): with the one on the path, its children.
    pub const CHILDREN: &str = "children";
    /// The conversation's first messages that were ever moved off the path.
    pub const ROOTS: &str = "roots";
    /// A message's author (`user` / `assistant`).
    pub const ROLE: &str = "role";
    /// A reply's rating, its comment and when it was given.
    pub const RATING: &str = "rating";
    pub const RATING_COMMENT: &str = "rating_comment";
    pub const RATED_AT: &str = "rated_at";
}

/// The clauses of an update expression, gathered from a write's parts.
#[derive(Debug, Default)]
pub(super) struct Clauses {
    /// `SET` assignments.
    pub set: Vec<String>,
    /// `ADD`s (to a number or a set).
    pub add: Vec<String>,
    /// `REMOVE`d attributes.
    pub remove: Vec<String>,
}

impl Clauses {
    /// Clauses that start with the `SET` assignments `set`.
    pub fn setting(set: &[&str]) -> Self {
        Self {
            set: set.iter().map(|c| (*c).to_owned()).collect(),
            ..Self::default()
        }
    }

    /// The update expression: `SET …` then `REMOVE …`.
    pub fn expression(&self) -> String {
        let mut parts = vec![];
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.add.is_empty() {
            parts.push(format!("ADD {}", self.add.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        parts.join(" ")
    }
}

/// Expression attribute names and values, to add to an update.
type Names = Vec<(String, &'static str)>;
type Values = Vec<(String, AttributeValue)>;

/// The change `patch` makes to a conversation item: a setting given is
/// set, one given as `null` removed, one not named left alone.
pub(super) fn settings_change(patch: &SettingsPatch, clauses: &mut Clauses) -> (Names, Values) {
    let (mut names, mut values) = (vec![], vec![]);
    let mut one = |attr: &'static str, change: Change<AttributeValue>| {
        let (name, value) = (format!("#set_{attr}"), format!(":set_{attr}"));
        match change {
            Change::Keep => return,
            Change::Reset => clauses.remove.push(name.clone()),
            Change::Set(v) => {
                clauses.set.push(format!("{name} = {value}"));
                values.push((value, v));
            }
        }
        names.push((name, attr));
    };
    let n = |x: String| AttributeValue::N(x);
    one(attr::MODEL, map(&patch.model, |m| s(m.as_str())));
    one(attr::INSTRUCTIONS, map(&patch.instructions, |t| s(t)));
    one(
        attr::TEMPERATURE,
        map(&patch.temperature, |t| n(t.to_string())),
    );
    one(attr::TOP_P, map(&patch.top_p, |p| n(p.to_string())));
    one(
        attr::MAX_TOKENS,
        map(&patch.max_tokens, |m| n(m.to_string())),
    );
    (names, values)
}

fn map<T>(change: &Change<T>, f: impl FnOnce(&T) -> AttributeValue) -> Change<AttributeValue> {
    match change {
        Change::Keep => Change::Keep,
        Change::Reset => Change::Reset,
        Change::Set(v) => Change::Set(f(v)),
    }
}

/// The stored form of a conversation.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ConversationItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(rename = "GSI1PK")]
    gsi1pk: String,
    #[serde(rename = "GSI1SK")]
    gsi1sk: String,
    user_id: String,
    conversation_id: String,
    title: String,
    last_message: String,
    created_at: String,
    updated_at: String,
    message_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_reply: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claimed_until: Option<String>,
    /// The settings: each absent until chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    /// See [`attr::ROOTS`].
    #[serde(with = "serde_dynamo::string_set")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roots: Vec<String>,
}

/// The stored form of a message.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct MessageItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    user_id: String,
    conversation_id: String,
    message_id: String,
    role: String,
    content: String,
    created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_tokens: Option<u64>,
    /// `pending` or `failed`; absent for complete messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Present (true) only on a reply cut to `MAX_REPLY_CHARS`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    /// A pending reply's hold on its day's token quota: the day, the
    /// tokens held, the prompt's estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reserved_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reserved_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reserved_prompt: Option<u64>,
    /// Present (true) on a pending reply counted among its user's live generations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    reserved_live: bool,
    /// The catalogue's model of a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    /// The message it follows, on a message off the active path (on the
    /// path the previous message is its parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    /// See [`attr::CHILDREN`].
    #[serde(with = "serde_dynamo::string_set")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    children: Vec<String>,
    /// The user's rating of a reply (`up` / `down`), its comment and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rating: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rating_comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rated_at: Option<String>,
    /// A rated reply is in the index by its day (see [`keys::ratings_pk`]).
    #[serde(rename = "GSI1PK", default, skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(rename = "GSI1SK", default, skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
}

impl ConversationItem {
    /// The item of `c`, owned by `user`, as an SDK item.
    pub fn of(user: &UserId, c: &Conversation) -> Result<Item, StoreError> {
        to_item(&Self {
            pk: keys::conversation_pk(user, c.id),
            sk: keys::CONVERSATION_SK.to_owned(),
            gsi1pk: keys::user_conversations_pk(user),
            gsi1sk: keys::updated_sk(c.updated_at, c.id),
            user_id: user.to_string(),
            conversation_id: c.id.to_string(),
            title: c.title.as_str().to_owned(),
            last_message: c.last_message.clone(),
            created_at: format_timestamp(c.created_at),
            updated_at: format_timestamp(c.updated_at),
            message_count: c.message_count,
            pending_reply: c.state.reply().map(|m| m.to_string()),
            claimed_until: match c.state {
                ConversationState::Claimed { until, .. } => Some(format_timestamp(until)),
                _ => None,
            },
            model: c.settings.model.as_ref().map(|m| m.as_str().to_owned()),
            instructions: c.settings.instructions.clone(),
            temperature: c.settings.temperature,
            top_p: c.settings.top_p,
            max_tokens: c.settings.max_tokens,
            roots: ids(&c.roots),
        })
    }

    /// The conversation an SDK item holds.
    pub fn read(item: Item) -> Result<Conversation, StoreError> {
        let i: Self = from_item(item)?;
        Ok(Conversation {
            id: ConversationId::parse(&i.conversation_id).map_err(corrupt)?,
            title: Title::from_stored(i.title),
            last_message: i.last_message,
            created_at: parse_timestamp(&i.created_at).map_err(corrupt)?,
            updated_at: parse_timestamp(&i.updated_at).map_err(corrupt)?,
            message_count: i.message_count,
            // The two attributes the conditional writes read: the reply
            // waited for, and while a send still holds it, its claim.
            state: match (i.pending_reply, i.claimed_until) {
                (None, _) => ConversationState::Free,
                (Some(reply), None) => ConversationState::Waiting {
                    reply: MessageId::parse(&reply).map_err(corrupt)?,
                },
                (Some(reply), Some(until)) => ConversationState::Claimed {
                    reply: MessageId::parse(&reply).map_err(corrupt)?,
                    until: parse_timestamp(&until).map_err(corrupt)?,
                },
            },
            settings: Settings {
                model: model_id(i.model)?,
                instructions: i.instructions,
                temperature: i.temperature,
                top_p: i.top_p,
                max_tokens: i.max_tokens,
            },
            roots: parse_ids(&i.roots)?,
        })
    }
}

impl MessageItem {
    /// The item of `m` on the active path of `conversation`, owned by
    /// `user`, as an SDK item.
    pub fn of(
        user: &UserId,
        conversation: ConversationId,
        m: &Message,
    ) -> Result<Item, StoreError> {
        to_item(&Self::on_path(user, conversation, m))
    }

    /// The item of `m` where a branch change puts it: on the active path
    /// (`MSG#`) or off it (`ALT#`, with its parent).
    pub fn moved(
        user: &UserId,
        conversation: ConversationId,
        m: &Message,
        on_path: bool,
    ) -> Result<Item, StoreError> {
        let mut item = Self::on_path(user, conversation, m);
        if !on_path {
            item.sk = keys::off_path_sk(m.id);
            item.parent = m.parent.map(|p| p.to_string());
        }
        to_item(&item)
    }

    fn on_path(user: &UserId, conversation: ConversationId, m: &Message) -> Self {
        // Only a pending reply's settler needs its reservation.
        let reserved = m.reserved.filter(|_| m.is_pending());
        let (status, job_id, error) = match &m.status {
            MessageStatus::Complete => (None, None, None),
            MessageStatus::Pending { job_id } => {
                (Some(m.status.as_str()), Some(job_id.clone()), None)
            }
            MessageStatus::Failed { error } => (Some(m.status.as_str()), None, Some(error.clone())),
            MessageStatus::Cancelled => (Some(m.status.as_str()), None, None),
        };
        Self {
            pk: keys::conversation_pk(user, conversation),
            sk: keys::message_sk(m.id),
            user_id: user.to_string(),
            conversation_id: conversation.to_string(),
            message_id: m.id.to_string(),
            role: m.role.as_str().to_owned(),
            content: m.content.clone(),
            created_at: format_timestamp(m.created_at),
            input_tokens: m.usage.map(|u| u.input_tokens),
            output_tokens: m.usage.map(|u| u.output_tokens),
            status: status.map(str::to_owned),
            job_id,
            error,
            truncated: m.truncated,
            reserved_on: reserved.map(|r| r.day.to_string()),
            reserved_tokens: reserved.map(|r| r.tokens),
            reserved_prompt: reserved.map(|r| r.prompt),
            reserved_live: reserved.is_some_and(|r| r.live),
            model: m.model.as_ref().map(|id| id.as_str().to_owned()),
            parent: None,
            children: ids(&m.children),
            rating: m.feedback.as_ref().map(|f| f.rating.as_str().to_owned()),
            rating_comment: m.feedback.as_ref().and_then(|f| f.comment.clone()),
            rated_at: m.feedback.as_ref().map(|f| format_timestamp(f.updated_at)),
            gsi1pk: m.feedback.as_ref().map(|f| keys::ratings_pk(f.updated_at)),
            gsi1sk: m
                .feedback
                .as_ref()
                .map(|f| keys::rated_sk(f.updated_at, m.id)),
        }
    }

    /// The message an SDK item holds.
    pub fn read(item: Item) -> Result<Message, StoreError> {
        let i: Self = from_item(item)?;
        let usage = match (i.input_tokens, i.output_tokens) {
            (Some(input_tokens), Some(output_tokens)) => Some(Usage {
                input_tokens,
                output_tokens,
            }),
            _ => None,
        };
        Ok(Message {
            id: MessageId::parse(&i.message_id).map_err(corrupt)?,
            role: Role::parse(&i.role).map_err(corrupt)?,
            content: i.content,
            created_at: parse_timestamp(&i.created_at).map_err(corrupt)?,
            usage,
            status: status(i.status.as_deref(), i.job_id, i.error)?,
            truncated: i.truncated,
            reserved: match (i.reserved_on, i.reserved_tokens) {
                (Some(day), Some(tokens)) => Some(Reservation {
                    day: day.parse().map_err(corrupt)?,
                    tokens,
                    prompt: i.reserved_prompt.unwrap_or(0),
                    live: i.reserved_live,
                }),
                _ => None,
            },
            model: model_id(i.model)?,
            parent: i
                .parent
                .as_deref()
                .map(MessageId::parse)
                .transpose()
                .map_err(corrupt)?,
            versions: vec![],
            children: parse_ids(&i.children)?,
            feedback: match (i.rating, i.rated_at) {
                (Some(rating), Some(at)) => Some(Box::new(Feedback {
                    rating: Rating::parse(&rating)
                        .ok_or_else(|| corrupt(format!("rating {rating:?}")))?,
                    comment: i.rating_comment,
                    updated_at: parse_timestamp(&at).map_err(corrupt)?,
                })),
                _ => None,
            },
        })
    }
}

/// Ids as a string set holds them.
fn ids(ids: &[MessageId]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

/// A string set of ids, read back.
fn parse_ids(raw: &[String]) -> Result<Vec<MessageId>, StoreError> {
    raw.iter()
        .map(|r| MessageId::parse(r).map_err(corrupt))
        .collect()
}

/// A stored model id, checked as any other id read back.
fn model_id(raw: Option<String>) -> Result<Option<ModelId>, StoreError> {
    raw.map(|m| ModelId::parse(&m).ok_or_else(|| corrupt(format!("model id {m:?}"))))
        .transpose()
}

fn status(
    word: Option<&str>,
    job_id: Option<String>,
    error: Option<String>,
) -> Result<MessageStatus, StoreError> {
    Ok(match word {
        None | Some(MessageStatus::COMPLETE) => MessageStatus::Complete,
        Some(MessageStatus::PENDING) => MessageStatus::Pending {
            job_id: job_id.ok_or_else(|| corrupt("a pending message without a job id"))?,
        },
        Some(MessageStatus::FAILED) => MessageStatus::Failed {
            error: error.unwrap_or_default(),
        },
        Some(MessageStatus::CANCELLED) => MessageStatus::Cancelled,
        Some(other) => return Err(corrupt(format!("unknown message status {other:?}"))),
    })
}

/// A string attribute.
pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// The key of a conversation's own item.
pub(super) fn conversation_key(user: &UserId, conversation: ConversationId) -> Item {
    Item::from([
        (
            keys::PK.to_owned(),
            s(keys::conversation_pk(user, conversation)),
        ),
        (keys::SK.to_owned(), s(keys::CONVERSATION_SK)),
    ])
}

/// Keeps only the named attributes: the key of an item, as a cursor needs it.
pub(super) fn key_of(item: &Item, names: &[&str]) -> Item {
    names
        .iter()
        .filter_map(|n| item.get(*n).map(|v| ((*n).to_owned(), v.clone())))
        .collect()
}

/// An item's sort key.
fn sort_key(item: &Item) -> Option<&str> {
    item.get(keys::SK)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

/// Whether an item is the conversation item of its partition.
pub(super) fn is_conversation(item: &Item) -> bool {
    sort_key(item) == Some(keys::CONVERSATION_SK)
}

/// Whether an item's sort key starts with `prefix` (a message on the
/// path, `MSG#`; a reply's progress, `LIVE#`).
pub(super) fn keyed_under(item: &Item, prefix: &str) -> bool {
    sort_key(item).is_some_and(|sk| sk.starts_with(prefix))
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(value).map_err(corrupt)
}

fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(corrupt)
}
