//! Message writes: a message and the change it makes to its conversation
//! in one transaction, guarded by the conversation's state. Every write is
//! conditioned on the owner stored in the item as well as the one in its
//! key: a key-format mistake can then never write into someone else's
//! conversation.

use crate::refusal::Refusal;
use aws_sdk_dynamodb::types::{
    builders::UpdateBuilder, AttributeValue, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use super::{
    backend,
    items::{
        attr, conversation_key, s, settings_change, Clauses, ConversationItem, Item, MessageItem,
    },
    transact::{failed_conditions, live_refused, quota_refused, transaction_failed},
    DynamoStore,
};
use crate::{
    domain::{
        format_timestamp, preview, Claim, Conversation, ConversationId, Message, MessageId,
        SettingsPatch, UserId,
    },
    store::{keys, GenerationCap, StoreError},
};

/// The conversation exists and is the user's (names `#pk`, `#user`; value `:user`).
pub(super) const OWNED: &str = "attribute_exists(#pk) AND #user = :user";
/// What a message write moves on its conversation (values from [`moved_to`]).
pub(super) const MOVED: &str =
    "updated_at = :at, last_message = :preview, #gsk = :gsk, message_count = message_count + :one";

/// Which state of the conversation a message write needs, beyond [`OWNED`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Guard {
    /// No reply pending and no send's claim.
    Free,
    /// As `Free`, or only a claim that lapsed before this time (its send died).
    FreeOrLapsed(DateTime<Utc>),
    /// Claimed for this reply (by the send that stores it).
    ClaimedBy(MessageId),
}

impl Guard {
    /// The condition (names `#pk`, `#user`, and the ones [`Self::values`]
    /// adds; value `:user`).
    pub(super) fn condition(self) -> &'static str {
        match self {
            Self::Free => {
                "attribute_exists(#pk) AND #user = :user AND attribute_not_exists(#pending)"
            }
            Self::FreeOrLapsed(_) => {
                "attribute_exists(#pk) AND #user = :user AND \
                 (attribute_not_exists(#pending) OR #claimed < :guard)"
            }
            Self::ClaimedBy(_) => "attribute_exists(#pk) AND #user = :user AND #pending = :guard",
        }
    }

    /// The names and values the condition uses beyond the owner's.
    pub(super) fn values(self, update: UpdateBuilder) -> UpdateBuilder {
        let update = update.expression_attribute_names("#pending", attr::PENDING_REPLY);
        match self {
            Self::Free => update,
            Self::FreeOrLapsed(now) => update
                .expression_attribute_names("#claimed", attr::CLAIMED_UNTIL)
                .expression_attribute_values(":guard", s(format_timestamp(now))),
            Self::ClaimedBy(reply) => {
                update.expression_attribute_values(":guard", s(reply.to_string()))
            }
        }
    }
}

/// What a message write does beyond the conversation and the message.
pub(super) struct Actions<'a> {
    /// More actions in its transaction (a count, a settlement).
    pub(super) more: Vec<TransactWriteItem>,
    /// The generation cap it admits a send under, if it does.
    pub(super) cap: Option<&'a GenerationCap>,
}

/// The values of [`MOVED`] for `message`.
pub(super) fn moved_to(
    update: UpdateBuilder,
    conversation: ConversationId,
    message: &Message,
) -> UpdateBuilder {
    let at = message.created_at;
    update
        .expression_attribute_names("#gsk", keys::GSI1SK)
        .expression_attribute_values(":at", s(format_timestamp(at)))
        .expression_attribute_values(":preview", s(preview(&message.content)))
        .expression_attribute_values(":gsk", s(keys::updated_sk(at, conversation)))
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
}
/// A send's claim on its conversation (values from [`claimed_by`]).
pub(super) const CLAIMED: &str = "#pending = :reply, #claimed = :until";

/// The names and values of [`CLAIMED`] for `claim`.
pub(super) fn claimed_by(update: UpdateBuilder, claim: &Claim) -> UpdateBuilder {
    update
        .expression_attribute_names("#claimed", attr::CLAIMED_UNTIL)
        .expression_attribute_values(":reply", s(claim.reply.to_string()))
        .expression_attribute_values(":until", s(format_timestamp(claim.until)))
}

/// `clauses` and a send's change to the settings, as `update`'s expression.
pub(super) fn with_settings(
    update: UpdateBuilder,
    mut clauses: Clauses,
    settings: &SettingsPatch,
) -> UpdateBuilder {
    let (names, values) = settings_change(settings, &mut clauses);
    let update = names
        .into_iter()
        .fold(update, |u, (k, v)| u.expression_attribute_names(k, v));
    values
        .into_iter()
        .fold(update, |u, (k, v)| u.expression_attribute_values(k, v))
        .update_expression(clauses.expression())
}

/// A new item: nothing is overwritten.
pub(super) const NEW_ITEM: &str = "attribute_not_exists(#pk)";

impl DynamoStore {
    /// Stores `message` and applies `change` to its conversation in one
    /// transaction, only if the conversation is the user's and `guard`
    /// holds. `change` sets the update expression and any name or value it
    /// uses beyond the guard's (DynamoDB refuses unused ones).
    pub(super) async fn add_message(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
        guard: Guard,
        actions: Actions<'_>,
        change: impl FnOnce(UpdateBuilder) -> UpdateBuilder,
    ) -> Result<(), StoreError> {
        let put = self.put_new(MessageItem::of(user, conversation, message)?)?;
        self.guarded_write(user, conversation, guard, vec![put], actions, change)
            .await
    }

    /// Applies `change` to the conversation and makes `writes` in one
    /// transaction, only if the conversation is the user's and `guard`
    /// holds (the refusals as [`Self::add_message`]'s).
    pub(super) async fn guarded_write(
        &self,
        user: &UserId,
        conversation: ConversationId,
        guard: Guard,
        writes: Vec<TransactWriteItem>,
        Actions { more, cap }: Actions<'_>,
        change: impl FnOnce(UpdateBuilder) -> UpdateBuilder,
    ) -> Result<(), StoreError> {
        let guarded = guard.values(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(conversation_key(user, conversation)))
                .condition_expression(guard.condition())
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .expression_attribute_names("#pk", keys::PK)
                .expression_attribute_names("#user", attr::USER_ID)
                .expression_attribute_values(":user", s(user.as_str())),
        );
        let update = change(guarded)
            .build()
            .map_err(backend("building an Update"))?;
        let mut write = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build());
        for item in writes.into_iter().chain(more) {
            write = write.transact_items(item);
        }
        self.transact_admitting(user, write, cap)
            .await
            .map_err(|e| match failed_conditions(&e) {
                Some(reasons) if cap.is_some() && live_refused(&reasons) => {
                    StoreError::Refused(Refusal::TooManyGenerations)
                }
                Some(reasons) if quota_refused(&reasons) => {
                    StoreError::Refused(Refusal::QuotaExceeded)
                }
                // The conversation is there, so the condition that failed is the guard.
                Some(reasons) if reasons.first().is_some_and(|(_, old)| old.is_some()) => {
                    StoreError::Refused(Refusal::ReplyPending)
                }
                Some(_) => StoreError::Refused(Refusal::NotFound),
                None => transaction_failed("TransactWriteItems message write")(e),
            })?;
        Ok(())
    }

    /// A Put of a new item.
    pub(super) fn put_new(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(NEW_ITEM)
            .expression_attribute_names("#pk", keys::PK)
            .build()
            .map_err(backend("building a Put"))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

/// The conversation a write returned (its `ReturnValues`).
pub(super) fn conversation_in(
    attributes: Option<Item>,
    call: &str,
) -> Result<Conversation, StoreError> {
    let item =
        attributes.ok_or_else(|| StoreError::Corrupt(format!("{call} returned no attributes")))?;
    ConversationItem::read(item)
}
