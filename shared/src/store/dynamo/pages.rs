//! The reads: a conversation with its newest page in one Query, later
//! pages from a cursor, the conversation list from the index. Each page
//! costs one Query whatever lies beyond it.

use crate::refusal::Refusal;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;

use super::{
    backend,
    items::{
        conversation_key, is_conversation, key_of, keyed_under, s, ConversationItem, Item,
        MessageItem,
    },
    DynamoStore,
};
use crate::{
    domain::{Conversation, ConversationId, Message, MessageId, UserId},
    store::{keys, Page, PageRequest, Pages, StoreError, Tree},
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
            // From the path's first message on: versions off the path
            // (`ALT#`) sort before it and are never read here.
            .key_condition_expression("#pk = :pk AND #sk >= :path")
            .expression_attribute_names("#sk", keys::SK)
            .expression_attribute_values(":path", s(keys::MESSAGE_SK_PREFIX))
            // The conversation, the page, and one more to know whether more
            // exist (the parent of the page's oldest message).
            .limit(limit.saturating_add(2) as i32)
            .send()
            .await
            .map_err(backend("Query conversation and messages"))?;
        let mut items = out.items.unwrap_or_default();
        if !items.first().is_some_and(is_conversation) {
            return Err(StoreError::Refused(Refusal::NotFound));
        }
        let found = ConversationItem::read(items.remove(0))?;
        let mut messages = self
            .path_page(&scope, limit, items, out.last_evaluated_key)
            .await?;
        with_roots(&found, &mut messages.items);
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
        self.path_page(&scope, page.limit, items, out.last_evaluated_key)
            .await
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

    /// Messages of the active path read newest first (the page and, when
    /// the read reached it, the message before the page: the parent of
    /// its oldest), as a page shows them: oldest first, each with its
    /// parent and its versions. The parent's children known off the path
    /// are on its item, so versions cost no read of their own; only a read
    /// that DynamoDB's 1 MB limit cut before that parent costs one more.
    /// The first message's versions are the conversation's ([`with_roots`]).
    async fn path_page(
        &self,
        scope: &str,
        limit: u32,
        mut items: Vec<Item>,
        last_evaluated: Option<Item>,
    ) -> Result<Page<Message>, StoreError> {
        let shown = items.len().min(limit as usize);
        if items.len() <= shown && last_evaluated.is_some() && shown > 0 {
            if let Some(parent) = self.message_before(&items[shown - 1]).await? {
                items.push(parent);
            }
        }
        let next_key = match (items.len() > shown, last_evaluated) {
            // More exist past the page: it ends at its oldest message.
            (true, _) => Some(key_of(&items[shown - 1], &[keys::PK, keys::SK])),
            (false, last) => last,
        };
        let next_cursor = next_key.and_then(|k| self.cursors.encode(scope, &k));
        let mut read = items
            .into_iter()
            .map(MessageItem::read)
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..shown {
            let (parent, known) = match read.get(i + 1) {
                Some(p) => (Some(p.id), p.children.as_slice()),
                None => (None, &[][..]),
            };
            read[i].versions = crate::domain::versions(read[i].id, known);
            read[i].parent = parent;
        }
        read.truncate(shown);
        read.reverse();
        Ok(Page {
            items: read,
            next_cursor,
        })
    }

    /// The message before `item` on the active path, if any.
    async fn message_before(&self, item: &Item) -> Result<Option<Item>, StoreError> {
        let (Some(pk), Some(sk)) = (item.get(keys::PK), item.get(keys::SK)) else {
            return Ok(None);
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk < :sk")
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#sk", keys::SK)
            .expression_attribute_values(":pk", pk.clone())
            .expression_attribute_values(":sk", sk.clone())
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(1)
            .send()
            .await
            .map_err(backend("Query the message before a page"))?;
        // Off-path versions and progress items sort before the path: one
        // of them means none.
        Ok(out
            .items
            .unwrap_or_default()
            .into_iter()
            .find(|i| keyed_under(i, keys::MESSAGE_SK_PREFIX)))
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

/// The page's first message of the conversation (the one without a
/// parent), if it shows it, gets the conversation's first-message versions.
fn with_roots(conversation: &Conversation, page: &mut [Message]) {
    if let Some(first) = page.first_mut().filter(|m| m.parent.is_none()) {
        first.versions = crate::domain::versions(first.id, &conversation.roots);
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
        let (found, mut messages) = tokio::try_join!(
            self.get_conversation(user, conversation),
            self.message_page(user, conversation, page)
        )?;
        with_roots(&found, &mut messages.items);
        Ok((found, messages))
    }

    async fn tree(&self, user: &UserId, conversation: ConversationId) -> Result<Tree, StoreError> {
        self.read_tree(user, conversation).await
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
