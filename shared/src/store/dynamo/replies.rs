//! Writing replies: a complete one with its settlement, a pending one
//! with its job, finishing a pending one once, releasing a claim, and
//! keeping what a stopped stream wrote.

use aws_sdk_dynamodb::types::{
    builders::UpdateBuilder, AttributeValue, ReturnValuesOnConditionCheckFailure, Update,
};
use chrono::{DateTime, NaiveDate, Utc};

use super::{
    items::{attr, conversation_key, s, Item},
    messages::{moved_to, Actions, Guard, MOVED},
    transact::{failed_conditions, n, transact, transaction_failed, update_item},
    DynamoStore,
};
use crate::{
    domain::{
        format_timestamp, outcome_tokens, preview, tokens_used, ConversationId, Message, MessageId,
        MessageStatus, ReplyOutcome, Reservation, Settlement, UserId,
    },
    store::{keys, FinishResult, PendingReply, Replies, StoreError},
};

impl Replies for DynamoStore {
    async fn add_reply(
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
                more: self.settled(user, reply.id, reply.reserved, counts, day)?,
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

    async fn add_pending_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
        relay: Option<&str>,
    ) -> Result<(), StoreError> {
        let more = match relay {
            Some(relay) => vec![self.relay_put(user, conversation, reply.id, relay, Utc::now())?],
            None => vec![],
        };
        self.add_message(
            user,
            conversation,
            reply,
            Guard::ClaimedBy(reply.id),
            Actions { more, cap: None },
            |update| {
                update
                    .update_expression("SET message_count = message_count + :one REMOVE #claimed")
                    .expression_attribute_names("#claimed", attr::CLAIMED_UNTIL)
                    .expression_attribute_values(":one", AttributeValue::N("1".into()))
            },
        )
        .await
    }

    async fn finish_reply(
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
        for item in self.settled(user, message, reserved, counts, at.date_naive())? {
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

    async fn abandon_reply(
        &self,
        user: &UserId,
        reply: MessageId,
        reserved: Reservation,
    ) -> Result<(), StoreError> {
        // Only the request that deleted the conversation (its DeleteItem
        // returned the pending reply) or whose write found it gone calls this.
        let items = self.settled(user, reply, Some(reserved), 0, Utc::now().date_naive())?;
        if items.is_empty() {
            return Ok(());
        }
        let write = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items));
        transact(write)
            .await
            .map_err(transaction_failed("TransactWriteItems abandon reply"))?;
        Ok(())
    }

    async fn release_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        reserved: Option<Reservation>,
    ) -> Result<(), StoreError> {
        let release = Update::builder()
            .table_name(&self.table)
            .set_key(Some(conversation_key(user, conversation)))
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
        let mut write = self
            .client
            .transact_write_items()
            .transact_items(update_item(release)?);
        for item in self.settled(user, reply, reserved, 0, Utc::now().date_naive())? {
            write = write.transact_items(item);
        }
        match transact(write).await {
            Ok(_) => Ok(()),
            Err(e) if failed_conditions(&e).is_some() => Ok(()),
            Err(e) => Err(transaction_failed("TransactWriteItems release claim")(e)),
        }
    }

    async fn keep_cancelled_text(
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
        let counted = Settlement::of(None, tokens_used(text, None), day);
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
