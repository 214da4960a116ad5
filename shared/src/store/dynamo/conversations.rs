//! Writing conversations: start one (with the send's count and claim),
//! append and claim, rename, delete, and purge a deleted one's messages.

use crate::refusal::Refusal;
use std::time::Duration;

use aws_sdk_dynamodb::types::{DeleteRequest, ReturnValue, WriteRequest};
use tokio::time::Instant;

use super::{
    backend,
    items::{
        attr, conversation_key, key_of, s, settings_change, Clauses, ConversationItem, Item,
        MessageItem,
    },
    messages::{
        claimed_by, conversation_in, moved_to, with_settings, Actions, Guard, CLAIMED, MOVED, OWNED,
    },
    shares::copy_of_record,
    transact::{
        failed_conditions, live_refused, not_found_or_backend, quota_refused, transaction_failed,
    },
    DynamoStore,
};
use crate::{
    domain::{Claim, Conversation, ConversationId, Message, SettingsPatch, UserId},
    store::{keys, Branching, ConversationChange, Conversations, Quota, StoreError, Switch},
};

/// Most items one BatchWriteItem takes.
const BATCH_WRITE_MAX: usize = 25;
/// Message keys read per purge round.
const PURGE_PAGE: i32 = 500;

impl DynamoStore {
    pub(super) async fn create(
        &self,
        user: &UserId,
        conversation: &Conversation,
        first: &Message,
        quota: Option<&Quota>,
    ) -> Result<(), StoreError> {
        let mut write = self
            .client
            .transact_write_items()
            .transact_items(self.put_new(ConversationItem::of(user, conversation)?)?)
            .transact_items(self.put_new(MessageItem::of(user, conversation.id, first)?)?);
        let mut cap = None;
        if let Some(quota) = quota {
            write = write.transact_items(self.count_send(user, quota)?);
            if let (Some(limit), Some(reply)) = (&quota.generations, conversation.state.reply()) {
                write = write.transact_items(self.begin_generation(user, reply, limit)?);
                cap = Some(limit);
            }
        }
        self.transact_admitting(user, write, cap)
            .await
            .map_err(|e| match failed_conditions(&e) {
                Some(reasons) if live_refused(&reasons) => {
                    StoreError::Refused(Refusal::TooManyGenerations)
                }
                Some(reasons) if quota_refused(&reasons) => {
                    StoreError::Refused(Refusal::QuotaExceeded)
                }
                _ => transaction_failed("TransactWriteItems create conversation")(e),
            })?;
        Ok(())
    }

    pub(super) async fn append(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
        claim: Option<(&Claim, &Quota, &SettingsPatch)>,
    ) -> Result<(), StoreError> {
        let guard = match claim {
            None => Guard::Free,
            Some(_) => Guard::FreeOrLapsed(message.created_at),
        };
        let mut admitted = vec![];
        let mut cap = None;
        if let Some((claim, quota, _)) = claim {
            admitted.push(self.count_send(user, quota)?);
            if let Some(limit) = &quota.generations {
                admitted.push(self.begin_generation(user, claim.reply, limit)?);
                cap = Some(limit);
            }
        }
        let actions = Actions {
            more: admitted,
            cap,
        };
        self.add_message(user, conversation, message, guard, actions, |update| {
            let update = moved_to(update, conversation, message);
            match claim {
                None => update.update_expression(format!("SET {MOVED}")),
                Some((claim, _, settings)) => {
                    let update = claimed_by(update, claim);
                    if settings.is_empty() {
                        // The usual send: the expression as it always was.
                        return update.update_expression(format!("SET {MOVED}, {CLAIMED}"));
                    }
                    with_settings(update, Clauses::setting(&[MOVED, CLAIMED]), settings)
                }
            }
        })
        .await
    }

    /// Deletes up to [`BATCH_WRITE_MAX`] items by key. DynamoDB may hand
    /// back part of a batch under load; the rest goes again after a
    /// growing pause. `Ok(false)` when `until` came first.
    pub(super) async fn delete_batch(
        &self,
        keys: &[Item],
        until: Instant,
    ) -> Result<bool, StoreError> {
        let mut requests: Vec<WriteRequest> = keys
            .iter()
            .map(|k| {
                let delete = DeleteRequest::builder()
                    .set_key(Some(key_of(k, &[keys::PK, keys::SK])))
                    .build()
                    .map_err(backend("building a DeleteRequest"))?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<_, StoreError>>()?;
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
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
        }
        unreachable!("the retry loop only ends by returning")
    }
}

impl Conversations for DynamoStore {
    async fn start_conversation(
        &self,
        user: &UserId,
        conversation: &Conversation,
        first: &Message,
        quota: &Quota,
    ) -> Result<(), StoreError> {
        self.create(user, conversation, first, Some(quota)).await
    }

    async fn append_and_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
        claim: &Claim,
        quota: &Quota,
        settings: &SettingsPatch,
    ) -> Result<(), StoreError> {
        self.append(user, conversation, message, Some((claim, quota, settings)))
            .await
    }

    async fn branch_and_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        branching: &Branching<'_>,
        claim: &Claim,
        quota: &Quota,
        settings: &SettingsPatch,
    ) -> Result<(), StoreError> {
        self.branch(user, conversation, branching, claim, quota, settings)
            .await
    }

    async fn switch_branch(
        &self,
        user: &UserId,
        conversation: ConversationId,
        switch: &Switch<'_>,
    ) -> Result<(), StoreError> {
        self.switch(user, conversation, switch).await
    }

    async fn update_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
        change: &ConversationChange,
    ) -> Result<Conversation, StoreError> {
        let mut clauses = Clauses::default();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(conversation_key(user, conversation)))
            .condition_expression(OWNED)
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#user", attr::USER_ID)
            .expression_attribute_values(":user", s(user.as_str()))
            .return_values(ReturnValue::AllNew);
        if let Some(title) = &change.title {
            clauses.set.push("title = :title".into());
            update = update.expression_attribute_values(":title", s(title.as_str()));
        }
        let (names, values) = settings_change(&change.settings, &mut clauses);
        let update = names
            .into_iter()
            .fold(update, |u, (k, v)| u.expression_attribute_names(k, v));
        let out = values
            .into_iter()
            .fold(update, |u, (k, v)| u.expression_attribute_values(k, v))
            .update_expression(clauses.expression())
            .send()
            .await
            .map_err(not_found_or_backend("UpdateItem conversation"))?;
        conversation_in(out.attributes, "UpdateItem")
    }

    async fn delete_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<Conversation, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(conversation_key(user, conversation)))
            .condition_expression(OWNED)
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#user", attr::USER_ID)
            .expression_attribute_values(":user", s(user.as_str()))
            // What was deleted, for the reply it may have been waiting for.
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(not_found_or_backend("DeleteItem conversation"))?;
        conversation_in(out.attributes, "DeleteItem")
    }

    async fn purge_messages(
        &self,
        user: &UserId,
        conversation: ConversationId,
        until: Instant,
    ) -> Result<bool, StoreError> {
        let pk = keys::conversation_pk(user, conversation);
        loop {
            if Instant::now() >= until {
                return Ok(false);
            }
            // Deleted items are gone from the next query, so each round
            // starts from the front of the partition.
            let out = self
                .client
                .query()
                .table_name(&self.table)
                // Every message, on the active path or off it, and every
                // share link: all sort before the conversation item (gone
                // already).
                .key_condition_expression("#pk = :pk AND #sk < :conversation")
                .expression_attribute_names("#pk", keys::PK)
                .expression_attribute_names("#sk", keys::SK)
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":conversation", s(keys::CONVERSATION_SK))
                .projection_expression("#pk, #sk")
                // A message written just before the delete must not be missed.
                .consistent_read(true)
                .limit(PURGE_PAGE)
                .send()
                .await
                .map_err(backend("Query message keys"))?;
            let mut keys = out.items.unwrap_or_default();
            if keys.is_empty() {
                return Ok(true);
            }
            // A share link's copy lives in a partition of its own: it goes
            // with the conversation's record of it.
            let copies: Vec<Item> = keys.iter().filter_map(copy_of_record).collect();
            keys.extend(copies);
            for chunk in keys.chunks(BATCH_WRITE_MAX) {
                if !self.delete_batch(chunk, until).await? {
                    return Ok(false);
                }
            }
        }
    }
}
