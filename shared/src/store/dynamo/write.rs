//! The writes. Every one is conditioned on the owner stored in the item
//! as well as the one in its key: a key-format mistake can then never
//! write into someone else's conversation. A message and the change it
//! makes to its conversation go in one transaction.

use std::time::Duration;

use aws_sdk_dynamodb::{
    error::{ProvideErrorMetadata, SdkError},
    operation::transact_write_items::{
        builders::TransactWriteItemsFluentBuilder, TransactWriteItemsError,
        TransactWriteItemsOutput,
    },
    types::{
        builders::UpdateBuilder, AttributeValue, DeleteRequest, Put, ReturnValue,
        ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update, WriteRequest,
    },
};
use chrono::{DateTime, NaiveDate, Utc};
use tokio::time::Instant;

use super::{
    backend,
    items::{attr, key_of, s, ConversationItem, Item, MessageItem},
    DynamoStore,
};
use crate::{
    domain::{
        format_timestamp, outcome_tokens, preview, tokens_used, Claim, Conversation,
        ConversationId, Message, MessageId, MessageStatus, ReplyOutcome, Reservation, Settlement,
        Title, UserId,
    },
    store::{keys, FinishResult, GenerationCap, PendingReply, Quota, StoreError},
};

/// The conversation exists and is the user's (names `#pk`, `#user`; value `:user`).
const OWNED: &str = "attribute_exists(#pk) AND #user = :user";
/// What a message write moves on its conversation (values from [`moved_to`]).
const MOVED: &str =
    "updated_at = :at, last_message = :preview, #gsk = :gsk, message_count = message_count + :one";

/// Which state of the conversation a message write needs, beyond [`OWNED`].
#[derive(Debug, Clone, Copy)]
enum Guard {
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
    fn condition(self) -> &'static str {
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
    fn values(self, update: UpdateBuilder) -> UpdateBuilder {
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
struct Actions<'a> {
    /// More actions in its transaction (a count, a settlement).
    more: Vec<TransactWriteItem>,
    /// The generation cap it admits a send under, if it does.
    cap: Option<&'a GenerationCap>,
}

/// The values of [`MOVED`] for `message`.
fn moved_to(
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
/// A new item: nothing is overwritten.
const NEW_ITEM: &str = "attribute_not_exists(#pk)";
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
            if let (Some(limit), Some(reply)) = (&quota.generations, conversation.pending_reply) {
                write = write.transact_items(self.begin_generation(user, reply, limit)?);
                cap = Some(limit);
            }
        }
        self.transact_admitting(user, write, cap)
            .await
            .map_err(|e| match failed_conditions(&e) {
                Some(reasons) if live_refused(&reasons) => StoreError::TooManyGenerations,
                Some(reasons) if quota_refused(&reasons) => StoreError::QuotaExceeded,
                _ => transaction_failed("TransactWriteItems create conversation")(e),
            })?;
        Ok(())
    }

    /// Counts `reply` among the user's live generations, refused at the cap.
    fn begin_generation(
        &self,
        user: &UserId,
        reply: MessageId,
        cap: &GenerationCap,
    ) -> Result<TransactWriteItem, StoreError> {
        update_item(
            self.live_update(user)
                .update_expression("SET #user = :user ADD #live :reply")
                .expression_attribute_names("#user", attr::USER_ID)
                .condition_expression("attribute_not_exists(#live) OR size(#live) < :max")
                // The set as it was, for [`Self::clear_stale`].
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .expression_attribute_values(":user", s(user.as_str()))
                .expression_attribute_values(":reply", AttributeValue::Ss(vec![reply.to_string()]))
                .expression_attribute_values(":max", n(u64::from(cap.max))),
        )
    }

    /// Ends `reply`'s generation (removing an id the set lacks changes nothing).
    fn end_generation(
        &self,
        user: &UserId,
        reply: MessageId,
    ) -> Result<TransactWriteItem, StoreError> {
        update_item(
            self.live_update(user)
                .update_expression("DELETE #live :reply")
                .expression_attribute_values(":reply", AttributeValue::Ss(vec![reply.to_string()])),
        )
    }

    fn live_update(&self, user: &UserId) -> UpdateBuilder {
        Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::usage_pk(user)))
            .key(keys::SK, s(keys::LIVE_SK))
            .expression_attribute_names("#live", attr::LIVE)
    }

    /// Sends a transaction that admits a send. When the user's live
    /// generations refused it and some of their entries are stale (sends
    /// that died before settling), those are removed and it goes once more:
    /// the happy path makes no extra call, a refusal at most two.
    async fn transact_admitting(
        &self,
        user: &UserId,
        write: TransactWriteItemsFluentBuilder,
        cap: Option<&GenerationCap>,
    ) -> Result<
        TransactWriteItemsOutput,
        SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
    > {
        let first = transact(write.clone()).await;
        let (Err(e), Some(cap)) = (&first, cap) else {
            return first;
        };
        let old = match failed_conditions(e) {
            Some(reasons) if live_refused(&reasons) => reasons.get(3).and_then(|r| r.1.clone()),
            _ => return first,
        };
        let stale: Vec<String> = old
            .as_ref()
            .and_then(|item| item.get(attr::LIVE))
            .and_then(|v| v.as_ss().ok())
            .into_iter()
            .flatten()
            .filter(|id| {
                MessageId::parse(id)
                    .ok()
                    .and_then(|m| m.created_at())
                    .is_none_or(|at| at < cap.stale_before)
            })
            .cloned()
            .collect();
        if stale.is_empty() {
            return first;
        }
        tracing::warn!(stale = stale.len(), "clearing generations whose sends died");
        let cleared = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(keys::PK, s(keys::usage_pk(user)))
            .key(keys::SK, s(keys::LIVE_SK))
            .update_expression("DELETE #live :stale")
            .expression_attribute_names("#live", attr::LIVE)
            .expression_attribute_values(":stale", AttributeValue::Ss(stale))
            .send()
            .await;
        match cleared {
            Ok(_) => transact(write).await,
            Err(e) => {
                tracing::warn!(error = %e, "could not clear stale generations");
                first
            }
        }
    }

    /// Counts one send on the quota's day, refused at its limits
    /// (an atomic ADD with a condition: never read-then-write).
    fn count_send(&self, user: &UserId, quota: &Quota) -> Result<TransactWriteItem, StoreError> {
        // A limit of 0 admits nothing, and needs no read to say so: the
        // conditions below admit a day with no count yet whatever the limit.
        if quota.message_limit == Some(0) || quota.token_limit == Some(0) {
            return Err(StoreError::QuotaExceeded);
        }
        let mut limits = vec![];
        let mut update = self
            .usage_update(user, quota.day)
            .expression_attribute_names("#messages", attr::MESSAGES)
            .expression_attribute_values(":one", n(1));
        update = if quota.reserve > 0 {
            // The reservation goes in with the count: admitted sends hold
            // their most until they settle, so parallel ones see each other.
            update
                .update_expression(
                    "SET #user = :user, #exp = :exp ADD #messages :one, #held :reserve",
                )
                .expression_attribute_values(":reserve", n(quota.reserve))
        } else {
            update.update_expression("SET #user = :user, #exp = :exp ADD #messages :one")
        };
        if let Some(max) = quota.message_limit {
            limits.push("(attribute_not_exists(#messages) OR #messages < :max_messages)");
            update = update.expression_attribute_values(":max_messages", n(max));
        }
        if quota.token_limit.is_some() || quota.reserve > 0 {
            update = update.expression_attribute_names("#held", attr::HELD);
        }
        if let Some(max) = quota.token_limit {
            limits.push("(attribute_not_exists(#held) OR #held < :max_tokens)");
            update = update.expression_attribute_values(":max_tokens", n(max));
        }
        if !limits.is_empty() {
            update = update.condition_expression(limits.join(" AND "));
        }
        update_item(update)
    }

    /// What settling `reply` writes beyond the reply itself: its day's usage
    /// (see [`Self::settle_usage`]) and, when it was one, the end of its
    /// live generation. One or two more actions in the settling transaction.
    fn settled(
        &self,
        user: &UserId,
        reply: MessageId,
        settlement: Settlement,
        reserved: Option<Reservation>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut items: Vec<TransactWriteItem> =
            self.settle_usage(user, settlement)?.into_iter().collect();
        if reserved.is_some_and(|r| r.live) {
            items.push(self.end_generation(user, reply)?);
        }
        Ok(items)
    }

    /// Settles a reply on its day's usage: adds what it counts, and lets its
    /// reservation go. `None` when nothing changes (no write needed).
    fn settle_usage(
        &self,
        user: &UserId,
        settlement: Settlement,
    ) -> Result<Option<TransactWriteItem>, StoreError> {
        if settlement.is_empty() {
            return Ok(None);
        }
        update_item(
            self.usage_update(user, settlement.day)
                .update_expression(
                    "SET #user = :user, #exp = :exp ADD #tokens :tokens, #held :held",
                )
                .expression_attribute_names("#tokens", attr::TOKENS)
                .expression_attribute_names("#held", attr::HELD)
                .expression_attribute_values(":tokens", n(settlement.tokens))
                .expression_attribute_values(
                    ":held",
                    AttributeValue::N(settlement.held.to_string()),
                ),
        )
        .map(Some)
    }

    /// An update of `user`'s counters of `day`, which expire two days after it.
    fn usage_update(&self, user: &UserId, day: NaiveDate) -> UpdateBuilder {
        let expires = day
            .succ_opt()
            .and_then(|d| d.checked_add_days(chrono::Days::new(2)))
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(0, |t| t.and_utc().timestamp());
        Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::usage_pk(user)))
            .key(keys::SK, s(keys::usage_sk(day)))
            .expression_attribute_names("#user", attr::USER_ID)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_values(":user", s(user.as_str()))
            .expression_attribute_values(":exp", AttributeValue::N(expires.to_string()))
    }

    pub(super) async fn append(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
        claim: Option<(&Claim, &Quota)>,
    ) -> Result<(), StoreError> {
        let guard = match claim {
            None => Guard::Free,
            Some(_) => Guard::FreeOrLapsed(message.created_at),
        };
        let mut admitted = vec![];
        let mut cap = None;
        if let Some((claim, quota)) = claim {
            admitted.push(self.count_send(user, quota)?);
            if let Some(limit) = &quota.generations {
                admitted.push(self.begin_generation(user, claim.reply, limit)?);
                cap = Some(limit);
            }
        }
        let claim = claim.map(|(claim, _)| claim);
        let actions = Actions {
            more: admitted,
            cap,
        };
        self.add_message(user, conversation, message, guard, actions, |update| {
            let update = moved_to(update, conversation, message);
            match claim {
                None => update.update_expression(format!("SET {MOVED}")),
                Some(claim) => update
                    .update_expression(format!("SET {MOVED}, #pending = :reply, #claimed = :until"))
                    .expression_attribute_names("#claimed", attr::CLAIMED_UNTIL)
                    .expression_attribute_values(":reply", s(claim.reply.to_string()))
                    .expression_attribute_values(":until", s(format_timestamp(claim.until))),
            }
        })
        .await
    }

    pub(super) async fn add_complete_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
    ) -> Result<(), StoreError> {
        let counts = tokens_used(&reply.content, reply.usage);
        let day = reply.created_at.date_naive();
        self.add_message(
            user,
            conversation,
            reply,
            Guard::ClaimedBy(reply.id),
            Actions {
                more: self.settled(
                    user,
                    reply.id,
                    Settlement::of(reply.reserved, counts, day),
                    reply.reserved,
                )?,
                cap: None,
            },
            |update| {
                moved_to(update, conversation, reply)
                    .update_expression(format!("SET {MOVED} REMOVE #pending, #claimed"))
                    .expression_attribute_names("#claimed", attr::CLAIMED_UNTIL)
            },
        )
        .await
    }

    pub(super) async fn add_pending(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
    ) -> Result<(), StoreError> {
        self.add_message(
            user,
            conversation,
            reply,
            Guard::ClaimedBy(reply.id),
            Actions {
                more: vec![],
                cap: None,
            },
            |update| {
                update
                    .update_expression("SET message_count = message_count + :one REMOVE #claimed")
                    .expression_attribute_names("#claimed", attr::CLAIMED_UNTIL)
                    .expression_attribute_values(":one", AttributeValue::N("1".into()))
            },
        )
        .await
    }

    pub(super) async fn release(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        reserved: Option<Reservation>,
    ) -> Result<(), StoreError> {
        let release = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::conversation_pk(user, conversation)))
            .key(keys::SK, s(keys::CONVERSATION_SK))
            .update_expression("REMOVE #pending, #claimed")
            .condition_expression(Guard::ClaimedBy(reply).condition())
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#user", attr::USER_ID)
            .expression_attribute_names("#pending", attr::PENDING_REPLY)
            .expression_attribute_names("#claimed", attr::CLAIMED_UNTIL)
            .expression_attribute_values(":user", s(user.as_str()))
            .expression_attribute_values(":guard", s(reply.to_string()));
        // The reservation goes with the claim, in the same write: a claim
        // released twice (or lapsed) cannot let it go twice.
        // (One call either way; a transaction of one item when no
        // reservation was made.)
        let unreserved = Settlement::of(reserved, 0, Utc::now().date_naive());
        let mut write = self
            .client
            .transact_write_items()
            .transact_items(update_item(release)?);
        for item in self.settled(user, reply, unreserved, reserved)? {
            write = write.transact_items(item);
        }
        match transact(write).await {
            Ok(_) => Ok(()),
            Err(e) if failed_conditions(&e).is_some() => Ok(()),
            Err(e) => Err(transaction_failed("TransactWriteItems release claim")(e)),
        }
    }

    /// Sets a cancelled reply's content, if it has none yet.
    pub(super) async fn keep_cancelled(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
        text: &str,
        day: NaiveDate,
    ) -> Result<bool, StoreError> {
        let keep = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(keys::conversation_pk(user, conversation)))
            .key(keys::SK, s(keys::message_sk(message)))
            .update_expression("SET content = :text")
            .condition_expression("#status = :cancelled AND content = :empty")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_values(":cancelled", s(MessageStatus::CANCELLED))
            .expression_attribute_values(":empty", s(""))
            .expression_attribute_values(":text", s(text));
        // The text written before the stop counts, once: with the write
        // that keeps it, which only the first keeper makes.
        let written = tokens_used(text, None);
        let counted = Settlement {
            day,
            tokens: written,
            held: i64::try_from(written).unwrap_or(i64::MAX),
        };
        let mut write = self
            .client
            .transact_write_items()
            .transact_items(update_item(keep)?);
        if let Some(counted) = self.settle_usage(user, counted)? {
            write = write.transact_items(counted);
        }
        match transact(write).await {
            Ok(_) => Ok(true),
            Err(e) if failed_conditions(&e).is_some() => Ok(false),
            Err(e) => Err(transaction_failed("TransactWriteItems cancelled reply")(e)),
        }
    }

    /// Stores `message` and applies `change` to its conversation in one
    /// transaction, only if the conversation is the user's and `guard`
    /// holds. `change` sets the update expression and any name or value it
    /// uses beyond the guard's (DynamoDB refuses unused ones).
    async fn add_message(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
        guard: Guard,
        Actions { more, cap }: Actions<'_>,
        change: impl FnOnce(UpdateBuilder) -> UpdateBuilder,
    ) -> Result<(), StoreError> {
        let guarded = guard.values(
            Update::builder()
                .table_name(&self.table)
                .key(keys::PK, s(keys::conversation_pk(user, conversation)))
                .key(keys::SK, s(keys::CONVERSATION_SK))
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
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(self.put_new(MessageItem::of(user, conversation, message)?)?);
        for item in more {
            write = write.transact_items(item);
        }
        self.transact_admitting(user, write, cap)
            .await
            .map_err(|e| match failed_conditions(&e) {
                Some(reasons) if cap.is_some() && live_refused(&reasons) => {
                    StoreError::TooManyGenerations
                }
                Some(reasons) if quota_refused(&reasons) => StoreError::QuotaExceeded,
                // The conversation is there, so the condition that failed is the guard.
                Some(reasons) if reasons.first().is_some_and(|(_, old)| old.is_some()) => {
                    StoreError::ReplyPending
                }
                Some(_) => StoreError::NotFound,
                None => transaction_failed("TransactWriteItems add message")(e),
            })?;
        Ok(())
    }

    pub(super) async fn finish(
        &self,
        reply: PendingReply<'_>,
        outcome: &ReplyOutcome,
        at: DateTime<Utc>,
    ) -> Result<FinishResult, StoreError> {
        let PendingReply {
            user,
            conversation,
            message,
            job_id,
            reserved,
        } = reply;
        let pk = keys::conversation_pk(user, conversation);
        let msg = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(&pk))
            .key(keys::SK, s(keys::message_sk(message)))
            .condition_expression("#status = :pending AND #job = :job")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#job", attr::JOB_ID)
            .expression_attribute_values(":pending", s(MessageStatus::PENDING))
            .expression_attribute_values(":job", s(job_id));
        let conv = Update::builder()
            .table_name(&self.table)
            .key(keys::PK, s(&pk))
            .key(keys::SK, s(keys::CONVERSATION_SK))
            .condition_expression("#pending = :reply")
            .expression_attribute_names("#pending", attr::PENDING_REPLY)
            .expression_attribute_values(":reply", s(message.to_string()));
        let (msg, conv) = finish_updates(msg, conv, conversation, outcome, at);
        let mut write = self
            .client
            .transact_write_items()
            .transact_items(update_item(msg)?)
            .transact_items(update_item(conv)?);
        let counts = outcome_tokens(outcome, reserved);
        let settlement = Settlement::of(reserved, counts, at.date_naive());
        for item in self.settled(user, message, settlement, reserved)? {
            write = write.transact_items(item);
        }
        let result = transact(write).await;
        match result {
            Ok(_) => Ok(FinishResult::Written),
            Err(e) => match failed_conditions(&e) {
                Some(reasons) => Ok(finish_refused(reasons.first())),
                None => Err(transaction_failed("TransactWriteItems finish reply")(e)),
            },
        }
    }

    pub(super) async fn rename(
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
            .condition_expression(OWNED)
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#user", attr::USER_ID)
            .expression_attribute_values(":title", s(title.as_str()))
            .expression_attribute_values(":user", s(user.as_str()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(not_found_or_backend("UpdateItem rename"))?;
        conversation_in(out.attributes, "UpdateItem")
    }

    pub(super) async fn delete(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<Conversation, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(keys::PK, s(keys::conversation_pk(user, conversation)))
            .key(keys::SK, s(keys::CONVERSATION_SK))
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

    pub(super) async fn purge(
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
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", keys::PK)
                .expression_attribute_names("#sk", keys::SK)
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":prefix", s(keys::MESSAGE_SK_PREFIX))
                .projection_expression("#pk, #sk")
                // A message written just before the delete must not be missed.
                .consistent_read(true)
                .limit(PURGE_PAGE)
                .send()
                .await
                .map_err(backend("Query message keys"))?;
            let keys = out.items.unwrap_or_default();
            if keys.is_empty() {
                return Ok(true);
            }
            for chunk in keys.chunks(BATCH_WRITE_MAX) {
                if !self.delete_batch(chunk, until).await? {
                    return Ok(false);
                }
            }
        }
    }

    /// Deletes up to [`BATCH_WRITE_MAX`] items by key. DynamoDB may hand
    /// back part of a batch under load; the rest goes again after a
    /// growing pause. `Ok(false)` when `until` came first.
    async fn delete_batch(&self, keys: &[Item], until: Instant) -> Result<bool, StoreError> {
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

    /// A Put of a new item.
    fn put_new(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
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

/// The message's and the conversation's updates for `outcome`.
fn finish_updates(
    msg: UpdateBuilder,
    conv: UpdateBuilder,
    conversation: ConversationId,
    outcome: &ReplyOutcome,
    at: DateTime<Utc>,
) -> (UpdateBuilder, UpdateBuilder) {
    match outcome {
        ReplyOutcome::Complete {
            text,
            usage,
            truncated,
        } => (
            msg.update_expression(
                "SET content = :text, input_tokens = :in, output_tokens = :out, #cut = :cut \
                 REMOVE #status, #job",
            )
            .expression_attribute_names("#cut", attr::TRUNCATED)
            .expression_attribute_values(":cut", AttributeValue::Bool(*truncated))
            .expression_attribute_values(":text", s(text))
            .expression_attribute_values(":in", n(usage.map_or(0, |u| u.input_tokens)))
            .expression_attribute_values(":out", n(usage.map_or(0, |u| u.output_tokens))),
            conv.update_expression(
                "SET updated_at = :at, last_message = :preview, #gsk = :gsk REMOVE #pending",
            )
            .expression_attribute_names("#gsk", keys::GSI1SK)
            .expression_attribute_values(":at", s(format_timestamp(at)))
            .expression_attribute_values(":preview", s(preview(text)))
            .expression_attribute_values(":gsk", s(keys::updated_sk(at, conversation))),
        ),
        ReplyOutcome::Failed { error } => (
            msg.update_expression("SET #status = :failed, #error = :error REMOVE #job")
                .expression_attribute_names("#error", attr::ERROR)
                .expression_attribute_values(":failed", s(MessageStatus::FAILED))
                .expression_attribute_values(":error", s(error)),
            conv.update_expression("REMOVE #pending"),
        ),
        ReplyOutcome::Cancelled { text } => (
            msg.update_expression("SET #status = :cancelled, content = :text REMOVE #job")
                .expression_attribute_values(":cancelled", s(MessageStatus::CANCELLED))
                .expression_attribute_values(":text", s(text)),
            conv.update_expression("REMOVE #pending"),
        ),
    }
}

/// Why a finish was refused, from the message action's cancellation
/// reason: the message as it was tells a finished reply from another job's.
fn finish_refused(message: Option<&(bool, Option<Item>)>) -> FinishResult {
    match message {
        Some((true, Some(old))) => match old.get(attr::STATUS).and_then(|v| v.as_s().ok()) {
            Some(status) if status == MessageStatus::PENDING => FinishResult::OtherJob,
            _ => FinishResult::AlreadyFinal,
        },
        _ => FinishResult::Missing,
    }
}

/// The conversation a write returned (its `ReturnValues`).
fn conversation_in(attributes: Option<Item>, call: &str) -> Result<Conversation, StoreError> {
    let item =
        attributes.ok_or_else(|| StoreError::Corrupt(format!("{call} returned no attributes")))?;
    ConversationItem::read(item)
}

/// Sends a transaction, again (up to twice, 20 then 40 ms later) when
/// DynamoDB cancelled it for a conflict with another transaction on the same
/// items (a webhook and a read finishing one reply together, say): on the
/// next try its conditions see what the other wrote, so the caller gets a
/// decision, not an error.
async fn transact(
    write: TransactWriteItemsFluentBuilder,
) -> Result<
    TransactWriteItemsOutput,
    SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
> {
    let mut attempt = 0;
    loop {
        match write.clone().send().await {
            Err(e) if attempt < 2 && is_conflict(&e) => {
                attempt += 1;
                tracing::info!(attempt, "transaction conflict; trying again");
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            result => return result,
        }
    }
}

/// Cancellation reasons that say "not now" rather than "not this": the
/// table or an item throttled, or a conflict with another transaction
/// that outlasted [`transact`]'s retries (DynamoDB API reference,
/// TransactWriteItems, "CancellationReasons").
const LOAD_REASONS: [&str; 4] = [
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
    "TransactionConflict",
];

/// A transaction's failure: [`StoreError::Unavailable`] when it was
/// cancelled for load (no condition failed), as [`backend`] sorts any
/// other. A client then hears 503 with `Retry-After`, and a finished reply
/// is kept for a later try instead of being failed for good.
fn transaction_failed<R>(
    context: &'static str,
) -> impl FnOnce(SdkError<TransactWriteItemsError, R>) -> StoreError
where
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| {
        if cancelled_for_load(&e) {
            return StoreError::Unavailable {
                context,
                source: Box::new(e),
            };
        }
        backend(context)(e)
    }
}

/// The reasons a cancelled transaction gives for its items, leaving out
/// the items that were fine (`None`); empty for any other failure.
fn cancellation_codes<R>(err: &SdkError<TransactWriteItemsError, R>) -> Vec<&str> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
            let codes = e.cancellation_reasons().iter().filter_map(|r| r.code());
            codes.filter(|c| *c != "None").collect()
        }
        _ => vec![],
    }
}

/// Whether a transaction was cancelled for load alone: some reason is a
/// load reason and none a failed condition.
fn cancelled_for_load<R>(err: &SdkError<TransactWriteItemsError, R>) -> bool {
    let codes = cancellation_codes(err);
    codes.iter().any(|c| LOAD_REASONS.contains(c)) && !codes.contains(&"ConditionalCheckFailed")
}

/// Whether a transaction was cancelled only for conflicts, not conditions.
fn is_conflict<R>(err: &SdkError<TransactWriteItemsError, R>) -> bool {
    let codes = cancellation_codes(err);
    !codes.is_empty() && codes.iter().all(|c| *c == "TransactionConflict")
}

/// Whether the send's count, the third item of a message write (after the
/// conversation's and the message's), is the condition that failed.
fn quota_refused(reasons: &[(bool, Option<Item>)]) -> bool {
    reasons.get(2).is_some_and(|(failed, _)| *failed)
}

/// Whether the user's live generations, the fourth item of an admitting
/// write (after the send's count), is the condition that failed.
fn live_refused(reasons: &[(bool, Option<Item>)]) -> bool {
    reasons.get(3).is_some_and(|(failed, _)| *failed)
}

/// A number attribute.
fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn update_item(update: UpdateBuilder) -> Result<TransactWriteItem, StoreError> {
    let update = update.build().map_err(backend("building an Update"))?;
    Ok(TransactWriteItem::builder().update(update).build())
}

/// A failed `OWNED` condition is [`StoreError::NotFound`]: the conversation
/// is missing or someone else's, and the caller must not learn which.
fn not_found_or_backend<E, R>(context: &'static str) -> impl FnOnce(SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| match e.as_service_error().and_then(ProvideErrorMetadata::code) {
        Some("ConditionalCheckFailedException") => StoreError::NotFound,
        _ => backend(context)(e),
    }
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

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::{error::TransactionCanceledException, CancellationReason};

    use super::*;

    fn cancelled(codes: &[&str]) -> SdkError<TransactWriteItemsError, ()> {
        let reasons = codes
            .iter()
            .map(|c| CancellationReason::builder().code(*c).build())
            .collect();
        let e = TransactionCanceledException::builder()
            .set_cancellation_reasons(Some(reasons))
            .build();
        SdkError::service_error(TransactWriteItemsError::TransactionCanceledException(e), ())
    }

    #[test]
    fn a_cancellation_for_throttling_or_lasting_conflict_is_unavailability() {
        for codes in [
            &["None", "ThrottlingError"][..],
            &["TransactionConflict", "None"],
            &["ProvisionedThroughputExceeded"],
        ] {
            let e = transaction_failed("test")(cancelled(codes));
            assert!(
                matches!(e, StoreError::Unavailable { .. }),
                "{codes:?}: {e:?}"
            );
        }
        for codes in [
            &["ConditionalCheckFailed", "ThrottlingError"][..],
            &["ValidationError"],
        ] {
            let e = transaction_failed("test")(cancelled(codes));
            assert!(matches!(e, StoreError::Backend { .. }), "{codes:?}: {e:?}");
        }
    }

    #[test]
    fn only_a_cancellation_for_conflicts_alone_is_tried_again() {
        assert!(is_conflict(&cancelled(&["TransactionConflict", "None"])));
        assert!(!is_conflict(&cancelled(&[
            "ConditionalCheckFailed",
            "TransactionConflict"
        ])));
        assert!(!is_conflict(&cancelled(&[
            "ConditionalCheckFailed",
            "None"
        ])));
        assert!(!is_conflict(&cancelled(&["None"])));
    }
}
