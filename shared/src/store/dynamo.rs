//! [`ConversationStore`] on one DynamoDB table (key formats in [`super::keys`]).

use std::collections::HashMap;

use aws_sdk_dynamodb::{
    error::SdkError,
    operation::{
        query::builders::QueryFluentBuilder, transact_write_items::TransactWriteItemsError,
    },
    types::{
        AttributeValue, DeleteRequest, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
        TransactWriteItem, Update, WriteRequest,
    },
    Client,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{keys, ConversationStore, CursorCodec, FinishResult, Page, PageRequest, StoreError};
use crate::domain::{
    format_timestamp, parse_timestamp, preview, Conversation, ConversationId, Message, MessageId,
    MessageStatus, ReplyOutcome, Role, Title, Usage, UserId,
};

type Item = HashMap<String, AttributeValue>;

pub struct DynamoStore {
    client: Client,
    table: String,
    cursors: CursorCodec,
}

/// The stored form of a conversation; private, so the table layout can
/// change without touching the domain types.
#[derive(Debug, Serialize, Deserialize)]
struct ConversationItem {
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
}

#[derive(Debug, Serialize, Deserialize)]
struct MessageItem {
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
}

impl ConversationItem {
    fn new(user: &UserId, c: &Conversation) -> Self {
        Self {
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
            pending_reply: c.pending_reply.map(|m| m.to_string()),
        }
    }

    fn into_domain(self) -> Result<Conversation, StoreError> {
        Ok(Conversation {
            id: ConversationId::parse(&self.conversation_id).map_err(corrupt)?,
            title: Title::from_stored(self.title),
            last_message: self.last_message,
            created_at: parse_timestamp(&self.created_at).map_err(corrupt)?,
            updated_at: parse_timestamp(&self.updated_at).map_err(corrupt)?,
            message_count: self.message_count,
            pending_reply: self
                .pending_reply
                .map(|m| MessageId::parse(&m))
                .transpose()
                .map_err(corrupt)?,
        })
    }
}

impl MessageItem {
    fn new(user: &UserId, conversation: ConversationId, m: &Message) -> Self {
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
            status: match m.status {
                MessageStatus::Complete => None,
                ref other => Some(other.as_str().to_owned()),
            },
            job_id: match &m.status {
                MessageStatus::Pending { job_id } => Some(job_id.clone()),
                _ => None,
            },
            error: match &m.status {
                MessageStatus::Failed { error } => Some(error.clone()),
                _ => None,
            },
        }
    }

    fn into_domain(self) -> Result<Message, StoreError> {
        let usage = match (self.input_tokens, self.output_tokens) {
            (Some(input_tokens), Some(output_tokens)) => Some(Usage {
                input_tokens,
                output_tokens,
            }),
            _ => None,
        };
        Ok(Message {
            id: MessageId::parse(&self.message_id).map_err(corrupt)?,
            role: Role::parse(&self.role).map_err(corrupt)?,
            content: self.content,
            created_at: parse_timestamp(&self.created_at).map_err(corrupt)?,
            usage,
            status: match self.status.as_deref() {
                None | Some("complete") => MessageStatus::Complete,
                Some("pending") => MessageStatus::Pending {
                    job_id: self
                        .job_id
                        .ok_or_else(|| corrupt("a pending message without a job id"))?,
                },
                Some("failed") => MessageStatus::Failed {
                    error: self.error.unwrap_or_default(),
                },
                Some(other) => return Err(corrupt(format!("unknown message status {other:?}"))),
            },
        })
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn backend<E>(context: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| StoreError::Backend {
        context,
        source: Box::new(e),
    }
}

fn to_item<T: Serialize>(value: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(value).map_err(corrupt)
}

fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(corrupt)
}

/// What a message cursor is signed for: the first page issues it, later
/// pages check it, so both must name the same conversation.
fn message_scope(pk: &str) -> String {
    format!("messages\0{pk}")
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// Keeps only the named attributes: the key of an item, as a cursor needs it.
fn key_of(item: &Item, names: &[&str]) -> Item {
    names
        .iter()
        .filter_map(|n| item.get(*n).map(|v| ((*n).to_owned(), v.clone())))
        .collect()
}

/// For a transaction cancelled by its conditions: per action, whether its
/// condition failed and the item as it was (for actions that asked for it).
fn failed_conditions<R>(
    err: &SdkError<TransactWriteItemsError, R>,
) -> Option<Vec<(bool, Option<Item>)>> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
            let reasons: Vec<_> = e
                .cancellation_reasons()
                .iter()
                .map(|r| {
                    (
                        r.code() == Some("ConditionalCheckFailed"),
                        r.item().cloned(),
                    )
                })
                .collect();
            reasons.iter().any(|(failed, _)| *failed).then_some(reasons)
        }
        _ => None,
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>, cursors: CursorCodec) -> Self {
        Self {
            client,
            table: table.into(),
            cursors,
        }
    }

    fn put(&self, item: Item, condition: &str) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .build()
            .map_err(backend("building a Put"))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn get_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<Conversation, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, s(keys::conversation_pk(user, conversation)))
            .key(keys::SK, s(keys::CONVERSATION_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem conversation"))?;
        let item = out.item.ok_or(StoreError::NotFound)?;
        from_item::<ConversationItem>(item)?.into_domain()
    }

    /// One page of a query, without a trailing empty page: asks for one item
    /// more than the page holds, so "more exists" is known from the items
    /// themselves. A page DynamoDB cut short (its 1 MB limit) ends at its own
    /// `LastEvaluatedKey`, so nothing is skipped or repeated either way.
    fn page_of(
        &self,
        scope: &str,
        key_names: &[&str],
        limit: u32,
        mut items: Vec<Item>,
        last_evaluated: Option<Item>,
    ) -> (Vec<Item>, Option<String>) {
        let limit = limit as usize;
        let next_key = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| key_of(last, key_names))
        } else {
            last_evaluated
        };
        let next_cursor = next_key.and_then(|k| self.cursors.encode(scope, &k));
        (items, next_cursor)
    }

    fn decode_cursor(&self, scope: &str, page: &PageRequest) -> Result<Option<Item>, StoreError> {
        page.cursor
            .as_deref()
            .map(|c| {
                self.cursors
                    .decode(scope, c)
                    .map_err(StoreError::InvalidCursor)
            })
            .transpose()
    }

    /// A newest-first, consistent Query on a conversation's partition.
    fn partition_query(&self, pk: String) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_values(":pk", s(pk))
            .scan_index_forward(false)
            .consistent_read(true)
    }

    /// Message items read newest first, as a page shown oldest first.
    fn message_page_of(
        &self,
        scope: &str,
        limit: u32,
        items: Vec<Item>,
        last_evaluated: Option<Item>,
    ) -> Result<Page<Message>, StoreError> {
        let (items, next_cursor) =
            self.page_of(scope, &[keys::PK, keys::SK], limit, items, last_evaluated);
        let mut messages = items
            .into_iter()
            .map(|i| from_item::<MessageItem>(i)?.into_domain())
            .collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        Ok(Page {
            items: messages,
            next_cursor,
        })
    }

    /// The conversation and its newest page in one Query over the whole
    /// partition: the conversation item sorts after every message, so it
    /// comes first. `NotFound` when there is no conversation item.
    async fn first_page(
        &self,
        user: &UserId,
        conversation: ConversationId,
        limit: u32,
    ) -> Result<(Conversation, Page<Message>), StoreError> {
        let pk = keys::conversation_pk(user, conversation);
        let scope = message_scope(&pk);
        let out = self
            .partition_query(pk)
            .key_condition_expression("#pk = :pk")
            // The conversation, the page, and one more to know whether more exist.
            .limit(limit.saturating_add(2) as i32)
            .send()
            .await
            .map_err(backend("Query conversation and messages"))?;
        let mut items = out.items.unwrap_or_default();
        let is_conversation = items.first().is_some_and(|i| {
            i.get(keys::SK)
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                == Some(keys::CONVERSATION_SK)
        });
        if !is_conversation {
            return Err(StoreError::NotFound);
        }
        let found = from_item::<ConversationItem>(items.remove(0))?.into_domain()?;
        let messages = self.message_page_of(&scope, limit, items, out.last_evaluated_key)?;
        Ok((found, messages))
    }

    /// A later page of messages, from a cursor.
    async fn message_page(
        &self,
        user: &UserId,
        conversation: ConversationId,
        page: &PageRequest,
    ) -> Result<Page<Message>, StoreError> {
        let pk = keys::conversation_pk(user, conversation);
        let scope = message_scope(&pk);
        let start = self.decode_cursor(&scope, page)?;
        let out = self
            .partition_query(pk)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#sk", keys::SK)
            .expression_attribute_values(":prefix", s(keys::MESSAGE_SK_PREFIX))
            // One item more than the page, to know whether more exist.
            .limit(page.limit.saturating_add(1) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(backend("Query messages"))?;
        self.message_page_of(
            &scope,
            page.limit,
            out.items.unwrap_or_default(),
            out.last_evaluated_key,
        )
    }
}

/// Most items one BatchWriteItem takes.
const BATCH_WRITE_MAX: usize = 25;

impl ConversationStore for DynamoStore {
    async fn rename_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
        title: &Title,
    ) -> Result<Conversation, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(keys::PK, s(keys::conversation_pk(user, conversation)))
            .key(keys::SK, s(keys::CONVERSATION_SK))
            .update_expression("SET title = :title")
            .condition_expression("attribute_exists(PK) AND user_id = :user")
            .expression_attribute_values(":title", s(title.as_str()))
            .expression_attribute_values(":user", s(user.as_str()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) if se.is_conditional_check_failed_exception() => StoreError::NotFound,
                _ => backend("UpdateItem rename")(e),
            })?;
        let item = out
            .attributes
            .ok_or_else(|| StoreError::Corrupt("UpdateItem returned no attributes".into()))?;
        from_item::<ConversationItem>(item)?.into_domain()
    }

    async fn delete_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(keys::PK, s(keys::conversation_pk(user, conversation)))
            .key(keys::SK, s(keys::CONVERSATION_SK))
            .condition_expression("attribute_exists(PK) AND user_id = :user")
            .expression_attribute_values(":user", s(user.as_str()))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) if se.is_conditional_check_failed_exception() => StoreError::NotFound,
                _ => backend("DeleteItem conversation")(e),
            })?;
        Ok(())
    }

    async fn purge_messages(
        &self,
        user: &UserId,
        conversation: ConversationId,
        until: tokio::time::Instant,
    ) -> Result<bool, StoreError> {
        let pk = keys::conversation_pk(user, conversation);
        loop {
            if tokio::time::Instant::now() >= until {
                return Ok(false);
            }
            // Deleted items are gone from the next query, so each round
            // starts from the front of the partition.
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", keys::PK)
                .expression_attribute_names("#sk", keys::SK)
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":prefix", s(keys::MESSAGE_SK_PREFIX))
                .projection_expression("#pk, #sk")
                .limit(500)
                .send()
                .await
                .map_err(backend("Query message keys"))?;
            let keys = out.items.unwrap_or_default();
            if keys.is_empty() {
                return Ok(true);
            }
            for chunk in keys.chunks(BATCH_WRITE_MAX) {
                let mut requests: Vec<WriteRequest> = chunk
                    .iter()
                    .map(|k| {
                        let delete = DeleteRequest::builder()
                            .set_key(Some(key_of(k, &[keys::PK, keys::SK])))
                            .build()
                            .map_err(backend("building a DeleteRequest"))?;
                        Ok(WriteRequest::builder().delete_request(delete).build())
                    })
                    .collect::<Result<_, StoreError>>()?;
                // DynamoDB may hand back part of a batch under load; the
                // rest goes again after a pause.
                for attempt in 0u32.. {
                    let out = self
                        .client
                        .batch_write_item()
                        .request_items(&self.table, requests)
                        .send()
                        .await
                        .map_err(backend("BatchWriteItem delete messages"))?;
                    requests = out
                        .unprocessed_items
                        .and_then(|mut u| u.remove(&self.table))
                        .unwrap_or_default();
                    if requests.is_empty() {
                        break;
                    }
                    if tokio::time::Instant::now() >= until {
                        return Ok(false);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(5)))
                        .await;
                }
            }
        }
    }

    async fn create_conversation(
        &self,
        user: &UserId,
        conversation: &Conversation,
        first: &Message,
    ) -> Result<(), StoreError> {
        let conv = to_item(&ConversationItem::new(user, conversation))?;
        let msg = to_item(&MessageItem::new(user, conversation.id, first))?;
        self.client
            .transact_write_items()
            .transact_items(self.put(conv, "attribute_not_exists(PK)")?)
            .transact_items(self.put(msg, "attribute_not_exists(PK)")?)
            .send()
            .await
            .map_err(backend("TransactWriteItems create conversation"))?;
        Ok(())
    }

    async fn append_message(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
    ) -> Result<(), StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::conversation_pk(user, conversation)))
            .key(keys::SK, s(keys::CONVERSATION_SK))
            .update_expression(
                "SET updated_at = :at, last_message = :preview, #gsk = :gsk, \
                 message_count = message_count + :one",
            )
            // The owner is in the key already; checking the stored owner too
            // costs nothing and keeps a key-format mistake from writing into
            // someone else's conversation.
            .condition_expression(
                "attribute_exists(PK) AND user_id = :user AND attribute_not_exists(pending_reply)",
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_names("#gsk", keys::GSI1SK)
            .expression_attribute_values(":at", s(format_timestamp(message.created_at)))
            .expression_attribute_values(":preview", s(preview(&message.content)))
            .expression_attribute_values(
                ":gsk",
                s(keys::updated_sk(message.created_at, conversation)),
            )
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":user", s(user.as_str()))
            .build()
            .map_err(backend("building an Update"))?;
        let msg = to_item(&MessageItem::new(user, conversation, message))?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(self.put(msg, "attribute_not_exists(PK)")?)
            .send()
            .await
            .map_err(|e| match failed_conditions(&e) {
                // The conversation is there, so the condition that failed is "no reply pending".
                Some(reasons) if reasons.first().is_some_and(|(_, old)| old.is_some()) => {
                    StoreError::ReplyPending
                }
                Some(_) => StoreError::NotFound,
                None => backend("TransactWriteItems append message")(e),
            })?;
        Ok(())
    }

    async fn add_pending_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
    ) -> Result<(), StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::conversation_pk(user, conversation)))
            .key(keys::SK, s(keys::CONVERSATION_SK))
            .update_expression("SET pending_reply = :reply, message_count = message_count + :one")
            .condition_expression(
                "attribute_exists(PK) AND user_id = :user AND attribute_not_exists(pending_reply)",
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_values(":reply", s(reply.id.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":user", s(user.as_str()))
            .build()
            .map_err(backend("building an Update"))?;
        let msg = to_item(&MessageItem::new(user, conversation, reply))?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(self.put(msg, "attribute_not_exists(PK)")?)
            .send()
            .await
            .map_err(|e| match failed_conditions(&e) {
                Some(reasons) if reasons.first().is_some_and(|(_, old)| old.is_some()) => {
                    StoreError::ReplyPending
                }
                Some(_) => StoreError::NotFound,
                None => backend("TransactWriteItems pending reply")(e),
            })?;
        Ok(())
    }

    async fn finish_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
        job_id: &str,
        outcome: &ReplyOutcome,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<FinishResult, StoreError> {
        let pk = keys::conversation_pk(user, conversation);
        let mut msg = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(&pk))
            .key(keys::SK, s(keys::message_sk(message)))
            .condition_expression("#status = :pending AND job_id = :job")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":job", s(job_id));
        let mut conv = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(&pk))
            .key(keys::SK, s(keys::CONVERSATION_SK))
            .condition_expression("pending_reply = :reply")
            .expression_attribute_values(":reply", s(message.to_string()));
        match outcome {
            ReplyOutcome::Complete { text, usage } => {
                msg = msg
                    .update_expression("SET content = :text, input_tokens = :in, output_tokens = :out REMOVE #status, job_id")
                    .expression_attribute_values(":text", s(text))
                    .expression_attribute_values(":in", AttributeValue::N(usage.map_or(0, |u| u.input_tokens).to_string()))
                    .expression_attribute_values(":out", AttributeValue::N(usage.map_or(0, |u| u.output_tokens).to_string()));
                conv = conv
                    .update_expression("SET updated_at = :at, last_message = :preview, #gsk = :gsk REMOVE pending_reply")
                    .expression_attribute_names("#gsk", keys::GSI1SK)
                    .expression_attribute_values(":at", s(format_timestamp(at)))
                    .expression_attribute_values(":preview", s(preview(text)))
                    .expression_attribute_values(":gsk", s(keys::updated_sk(at, conversation)));
            }
            ReplyOutcome::Failed { error } => {
                msg = msg
                    .update_expression("SET #status = :failed, #error = :error REMOVE job_id")
                    .expression_attribute_names("#error", "error")
                    .expression_attribute_values(":failed", s("failed"))
                    .expression_attribute_values(":error", s(error));
                conv = conv.update_expression("REMOVE pending_reply");
            }
        }
        let result = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .update(msg.build().map_err(backend("building an Update"))?)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .update(conv.build().map_err(backend("building an Update"))?)
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(FinishResult::Written),
            Err(e) => match failed_conditions(&e) {
                Some(reasons) => Ok(match reasons.first() {
                    Some((true, Some(old))) => {
                        match old.get("status").and_then(|v| v.as_s().ok()) {
                            Some(status) if status == "pending" => FinishResult::OtherJob,
                            _ => FinishResult::AlreadyFinal,
                        }
                    }
                    _ => FinishResult::Missing,
                }),
                None => Err(backend("TransactWriteItems finish reply")(e)),
            },
        }
    }

    async fn conversation_page(
        &self,
        user: &UserId,
        conversation: ConversationId,
        page: &PageRequest,
    ) -> Result<(Conversation, Page<Message>), StoreError> {
        if page.cursor.is_none() {
            return self.first_page(user, conversation, page.limit).await;
        }
        // Later pages start past the conversation item: two reads, issued
        // together (one round trip's worth of latency).
        tokio::try_join!(
            self.get_conversation(user, conversation),
            self.message_page(user, conversation, page)
        )
    }

    async fn list_conversations(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        let pk = keys::user_conversations_pk(user);
        let scope = format!("conversations\0{pk}");
        let start = self.decode_cursor(&scope, page)?;
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(keys::GSI1)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", keys::GSI1PK)
            .expression_attribute_values(":pk", s(pk))
            .scan_index_forward(false)
            .limit(page.limit.saturating_add(1) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(backend("Query conversations"))?;
        let (items, next_cursor) = self.page_of(
            &scope,
            &[keys::PK, keys::SK, keys::GSI1PK, keys::GSI1SK],
            page.limit,
            out.items.unwrap_or_default(),
            out.last_evaluated_key,
        );
        let items = items
            .into_iter()
            .map(|i| from_item::<ConversationItem>(i)?.into_domain())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, next_cursor })
    }
}
