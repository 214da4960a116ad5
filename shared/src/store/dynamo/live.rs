//! Replies being written: one item per live reply in its conversation's
//! partition (`LIVE#<reply>`), holding the text relayed so far, the relay
//! that writes it and its last beat. DynamoDB's TTL removes it an hour and
//! a quarter after its last write (the longest a reply stays pending); a
//! delete's purge removes it with the messages.
//!
//! TTL deletes expired items "typically within a few days" (AWS, DynamoDB
//! developer guide, "Time to Live": expired items may still be read until
//! they are deleted), so an item past `expires_at` is read as absent.

use aws_sdk_dynamodb::{
    operation::update_item::{builders::UpdateItemFluentBuilder, UpdateItemError},
    types::{
        AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    },
};
use chrono::{DateTime, Utc};

use super::{
    backend,
    items::{attr, corrupt, s, Item},
    DynamoStore,
};
use crate::{
    domain::{format_timestamp, parse_timestamp, ConversationId, MessageId, UserId},
    store::{keys, Live, Progress, Relaying, StoreError},
};

/// How long a progress item outlives its last write.
const TTL_SECS: i64 = 75 * 60;

const TEXT: &str = "text";
const RELAY: &str = "relay";
const BEAT: &str = "beat";

fn key(user: &UserId, conversation: ConversationId, reply: MessageId) -> Item {
    Item::from([
        (
            keys::PK.to_owned(),
            s(keys::conversation_pk(user, conversation)),
        ),
        (keys::SK.to_owned(), s(keys::live_sk(reply))),
    ])
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The progress an item holds; `None` past its TTL.
fn read(item: &Item, now: DateTime<Utc>) -> Result<Option<Progress>, StoreError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
    let expires = item
        .get(attr::EXPIRES_AT)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<i64>().ok());
    if expires.is_some_and(|e| e < now.timestamp()) {
        return Ok(None);
    }
    let beat = match text(BEAT) {
        Some(b) => parse_timestamp(b).map_err(corrupt)?,
        None => DateTime::<Utc>::UNIX_EPOCH,
    };
    Ok(Some(Progress {
        text: text(TEXT).cloned().unwrap_or_default(),
        relay: text(RELAY).cloned().unwrap_or_default(),
        beat,
    }))
}

impl DynamoStore {
    /// The transaction item that makes `relay` the relay of a reply just
    /// stored pending (in the write that stores it: no call of its own).
    pub(super) fn relay_put(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        relay: &str,
        at: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut item = key(user, conversation, reply);
        item.insert(RELAY.into(), s(relay));
        item.insert(BEAT.into(), s(format_timestamp(at)));
        item.insert(TEXT.into(), s(""));
        item.insert(attr::USER_ID.into(), s(user.as_str()));
        item.insert(attr::EXPIRES_AT.into(), n(at.timestamp() + TTL_SECS));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(backend("building a Put"))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// An update of a reply's progress item, with the names both writes use.
    fn progress_update(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
    ) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user, conversation, reply)))
            .expression_attribute_names("#relay", RELAY)
            .expression_attribute_names("#beat", BEAT)
            .expression_attribute_names("#user", attr::USER_ID)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":user", s(user.as_str()))
    }
}

impl Live for DynamoStore {
    async fn save_progress(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        relay: &str,
        progress: &Progress,
    ) -> Result<bool, StoreError> {
        let expires = progress.beat.timestamp() + TTL_SECS;
        let result = self
            .progress_update(user, conversation, reply)
            .update_expression(
                "SET #text = :text, #relay = :next, #beat = :beat, #user = :user, #exp = :exp",
            )
            // Only the relay that holds it writes (a stale one that was
            // taken over must stop, or two would split the job's stream).
            .condition_expression("attribute_not_exists(#relay) OR #relay = :me")
            .expression_attribute_names("#text", TEXT)
            .expression_attribute_values(":text", s(&progress.text))
            .expression_attribute_values(":next", s(&progress.relay))
            .expression_attribute_values(":beat", s(format_timestamp(progress.beat)))
            .expression_attribute_values(":exp", n(expires))
            .expression_attribute_values(":me", s(relay))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(backend("UpdateItem progress")(e)),
            },
        }
    }

    async fn progress(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
    ) -> Result<Option<Progress>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user, conversation, reply)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem progress"))?;
        match out.item {
            Some(item) => read(&item, Utc::now()),
            None => Ok(None),
        }
    }

    async fn take_relay(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        relay: &str,
        at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<Relaying, StoreError> {
        let result = self
            .progress_update(user, conversation, reply)
            .update_expression("SET #relay = :me, #beat = :beat, #user = :user, #exp = :exp")
            .condition_expression(
                "attribute_not_exists(#relay) OR #relay = :none OR #beat < :stale OR #exp < :epoch",
            )
            .expression_attribute_values(":me", s(relay))
            .expression_attribute_values(":none", s(""))
            .expression_attribute_values(":beat", s(format_timestamp(at)))
            .expression_attribute_values(":stale", s(format_timestamp(stale_before)))
            .expression_attribute_values(":exp", n(at.timestamp() + TTL_SECS))
            .expression_attribute_values(":epoch", n(at.timestamp()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(Relaying::Taken(read(&item, at)?.unwrap_or_default()))
            }
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let found = failed.item().map(|i| read(i, at)).transpose()?.flatten();
                    Ok(Relaying::Held(found.unwrap_or_default()))
                }
                _ => Err(backend("UpdateItem take relay")(e)),
            },
        }
    }
}
