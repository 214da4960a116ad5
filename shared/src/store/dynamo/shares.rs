//! Share links: the copy under the link's own partition (`SHARE#<id>`,
//! read without a user), the conversation's record of it beside its
//! messages (`LINK#<id>` in its partition), written and removed together.

use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Put, TransactWriteItem};

use super::{
    backend,
    items::{attr, conversation_key, s, Item},
    messages::OWNED,
    transact::{failed_conditions, transact, transaction_failed},
    DynamoStore,
};
use crate::{
    domain::{
        format_timestamp, parse_timestamp, ConversationId, Share, ShareId, SharedConversation,
        UserId,
    },
    refusal::Refusal,
    store::{keys, Shares, StoreError},
};

/// The largest copy stored, in bytes of its messages' JSON: an item holds
/// at most 400 KB, and the copy shares it with its title and keys.
const MAX_COPY_BYTES: usize = 350 * 1024;

/// The attributes of a shared copy and of a conversation's record of it.
mod field {
    pub const TITLE: &str = "title";
    pub const CREATED_AT: &str = "created_at";
    pub const MESSAGES: &str = "messages_json";
    pub const CONVERSATION_ID: &str = "conversation_id";
    pub const SHARE_ID: &str = "share_id";
}

fn copy_key(share: &ShareId) -> Item {
    Item::from([
        (keys::PK.to_owned(), s(keys::shared_copy_pk(share.as_str()))),
        (keys::SK.to_owned(), s(keys::SHARED_COPY_SK)),
    ])
}

fn record_key(user: &UserId, conversation: ConversationId, share: &ShareId) -> Item {
    Item::from([
        (
            keys::PK.to_owned(),
            s(keys::conversation_pk(user, conversation)),
        ),
        (keys::SK.to_owned(), s(keys::share_sk(share.as_str()))),
    ])
}

fn text(item: &Item, name: &str) -> Result<String, StoreError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .ok_or_else(|| StoreError::Corrupt(format!("a share item without {name}")))
}

/// A shared copy's key, from its conversation's record of it (the purge
/// removes both).
pub(super) fn copy_of_record(record: &Item) -> Option<Item> {
    let sk = record.get(keys::SK)?.as_s().ok()?;
    let id = ShareId::parse(sk.strip_prefix(keys::SHARE_SK_PREFIX)?)?;
    Some(copy_key(&id))
}

impl Shares for DynamoStore {
    async fn create_share(
        &self,
        user: &UserId,
        conversation: ConversationId,
        share: &Share,
        copy: &SharedConversation,
    ) -> Result<(), StoreError> {
        let messages = serde_json::to_string(&copy.messages)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if messages.len() > MAX_COPY_BYTES {
            return Err(Refusal::TooLongToShare.into());
        }
        let created = s(format_timestamp(share.created_at));
        let mut shared = copy_key(&share.id);
        shared.extend([
            (attr::USER_ID.to_owned(), s(user.as_str())),
            (
                field::CONVERSATION_ID.to_owned(),
                s(conversation.to_string()),
            ),
            (field::TITLE.to_owned(), s(copy.title.as_str())),
            (field::CREATED_AT.to_owned(), created.clone()),
            (field::MESSAGES.to_owned(), s(messages)),
        ]);
        let mut record = record_key(user, conversation, &share.id);
        record.extend([
            (attr::USER_ID.to_owned(), s(user.as_str())),
            (field::SHARE_ID.to_owned(), s(share.id.as_str())),
            (field::CREATED_AT.to_owned(), created),
        ]);
        let owned = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(conversation_key(user, conversation)))
            .condition_expression(OWNED)
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#user", attr::USER_ID)
            .expression_attribute_values(":user", s(user.as_str()))
            .build()
            .map_err(backend("building a ConditionCheck"))?;
        let put = |item: Item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                // 128 random bits: never taken, but never overwritten either.
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", keys::PK)
                .build()
                .map_err(backend("building a Put"))
        };
        let write = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(owned).build())
            .transact_items(TransactWriteItem::builder().put(put(record)?).build())
            .transact_items(TransactWriteItem::builder().put(put(shared)?).build());
        match transact(write).await {
            Ok(_) => Ok(()),
            Err(e) if failed_conditions(&e).is_some() => Err(Refusal::NotFound.into()),
            Err(e) => Err(transaction_failed("TransactWriteItems share")(e)),
        }
    }

    async fn shares(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<Vec<Share>, StoreError> {
        // The records, then whether the conversation is there (a deleted
        // one's records last until its purge).
        let pk = keys::conversation_pk(user, conversation);
        let (mut shares, mut start) = (vec![], None);
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :link)")
                .expression_attribute_names("#pk", keys::PK)
                .expression_attribute_names("#sk", keys::SK)
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":link", s(keys::SHARE_SK_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend("Query share links"))?;
            for item in out.items.unwrap_or_default() {
                let id = text(&item, field::SHARE_ID)?;
                let at = text(&item, field::CREATED_AT)?;
                shares.push(Share {
                    id: ShareId::parse(&id)
                        .ok_or_else(|| StoreError::Corrupt(format!("share id {id:?}")))?,
                    created_at: parse_timestamp(&at)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                });
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        self.get_conversation(user, conversation).await?;
        shares.sort_by_key(|s| s.created_at);
        Ok(shares)
    }

    async fn revoke_share(
        &self,
        user: &UserId,
        conversation: ConversationId,
        share: &ShareId,
    ) -> Result<(), StoreError> {
        let record = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(record_key(user, conversation, share)))
            .condition_expression(OWNED)
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#user", attr::USER_ID)
            .expression_attribute_values(":user", s(user.as_str()))
            .build()
            .map_err(backend("building a Delete"))?;
        let copy = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(copy_key(share)))
            .build()
            .map_err(backend("building a Delete"))?;
        let write = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(record).build())
            .transact_items(TransactWriteItem::builder().delete(copy).build());
        match transact(write).await {
            Ok(_) => Ok(()),
            Err(e) if failed_conditions(&e).is_some() => Err(Refusal::ShareNotFound.into()),
            Err(e) => Err(transaction_failed("TransactWriteItems revoke share")(e)),
        }
    }

    async fn shared(&self, share: &ShareId) -> Result<Option<SharedConversation>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(copy_key(share)))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend("GetItem shared copy"))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        // A deleted conversation's links are gone at once, before the purge
        // removes their copies: its item must still be there.
        let user = UserId::parse(&text(&item, attr::USER_ID)?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let conversation = ConversationId::parse(&text(&item, field::CONVERSATION_ID)?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        match self.get_conversation(&user, conversation).await {
            Err(StoreError::Refused(Refusal::NotFound)) => return Ok(None),
            other => other?,
        };
        let messages = serde_json::from_str(&text(&item, field::MESSAGES)?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(SharedConversation {
            title: text(&item, field::TITLE)?,
            created_at: parse_timestamp(&text(&item, field::CREATED_AT)?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            messages,
        }))
    }
}
