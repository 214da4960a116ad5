//! The reads: a conversation with its newest page in one Query, later
//! pages from a cursor, the conversation list from the index. Each page
//! costs one Query whatever lies beyond it.

use crate::refusal::Refusal;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;

use super::{
    backend,
    items::{conversation_key, is_conversation, key_of, s, ConversationItem, Item, MessageItem},
    DynamoStore,
};
use crate::{
    domain::{Conversation, ConversationId, Message, MessageId, UserId},
    store::{keys, Page, PageRequest, Pages, StoreError},
};

/// What a message cursor is signed for: the first page issues it, later
/// pages check it, so both must name the same conversation.
fn message_scope(pk: &str) -> String {
    format!("messages\0{pk}")
}

/// What a list cursor is signed for: the user's list.
fn list_scope(pk: &str) -> String {
    format!("conversations\0{pk}")
}

impl DynamoStore {
    /// The conversation item alone, read consistently.
    pub(super) async fn get_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<Conversation, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(conversation_key(user, conversation)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem conversation"))?;
        ConversationItem::read(out.item.ok_or(StoreError::Refused(Refusal::NotFound))?)
    }

    /// The conversation and its newest page in one Query over the whole
    /// partition: the conversation item sorts after every message, so it
    /// comes first. `NotFound` when there is no conversation item.
    pub(super) async fn first_page(
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
        if !items.first().is_some_and(is_conversation) {
            return Err(StoreError::Refused(Refusal::NotFound));
        }
        let found = ConversationItem::read(items.remove(0))?;
        let messages = self.message_page_of(&scope, limit, items, out.last_evaluated_key)?;
        Ok((found, messages))
    }

    /// A later page of messages, from a cursor.
    pub(super) async fn message_page(
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
        let items = out.items.unwrap_or_default();
        self.message_page_of(&scope, page.limit, items, out.last_evaluated_key)
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
            .map(MessageItem::read)
            .collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        Ok(Page {
            items: messages,
            next_cursor,
        })
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
}

impl Pages for DynamoStore {
    async fn list_conversations(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        let pk = keys::user_conversations_pk(user);
        let scope = list_scope(&pk);
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
            .map(ConversationItem::read)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, next_cursor })
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

    async fn message(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, s(keys::conversation_pk(user, conversation)))
            .key(keys::SK, s(keys::message_sk(message)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem message"))?;
        out.item.map(MessageItem::read).transpose()
    }
}
