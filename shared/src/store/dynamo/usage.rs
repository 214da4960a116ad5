//! The per-user counters: a day's sends and tokens (with the tokens
//! replies not settled yet hold), and the replies in the making. Counted
//! in the writes a send and a reply already make: never a call of its own.

use crate::refusal::Refusal;
use aws_sdk_dynamodb::{
    error::SdkError,
    operation::transact_write_items::{
        builders::TransactWriteItemsFluentBuilder, TransactWriteItemsError,
        TransactWriteItemsOutput,
    },
    types::{
        builders::UpdateBuilder, AttributeValue, ReturnValuesOnConditionCheckFailure,
        TransactWriteItem, Update,
    },
};
use chrono::NaiveDate;

use super::{
    backend,
    items::{attr, s, Item},
    transact::{failed_conditions, live_refused, n, transact, update_item},
    DynamoStore,
};
use crate::{
    domain::{MessageId, Reservation, Settlement, UserId},
    store::{keys, DailyUsage, GenerationCap, Quota, Quotas, StoreError},
};

impl DynamoStore {
    /// Counts `reply` among the user's live generations, refused at the cap.
    pub(super) fn begin_generation(
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
    pub(super) fn end_generation(
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

    pub(super) fn live_update(&self, user: &UserId) -> UpdateBuilder {
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
    pub(super) async fn transact_admitting(
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
        match self.clear_stale(user, old.as_ref(), cap).await {
            true => transact(write).await,
            false => first,
        }
    }

    /// Removes the ids of the live set `old` (as the refused write found it)
    /// older than `cap.stale_before`: sends that died before settling.
    /// Whether any was removed, so the refused write may go again.
    async fn clear_stale(&self, user: &UserId, old: Option<&Item>, cap: &GenerationCap) -> bool {
        let stale: Vec<String> = old
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
            return false;
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
        if let Err(e) = &cleared {
            tracing::warn!(error = %e, "could not clear stale generations");
        }
        cleared.is_ok()
    }

    /// Counts one send on the quota's day, refused at its limits
    /// (an atomic ADD with a condition: never read-then-write).
    pub(super) fn count_send(
        &self,
        user: &UserId,
        quota: &Quota,
    ) -> Result<TransactWriteItem, StoreError> {
        // A limit of 0 admits nothing, and needs no read to say so: the
        // conditions below admit a day with no count yet whatever the limit.
        if quota.message_limit == Some(0) || quota.token_limit == Some(0) {
            return Err(StoreError::Refused(Refusal::QuotaExceeded));
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

    /// What settling `reply`, which counts `counts` tokens, writes beyond
    /// the reply itself: its day's usage ([`Settlement::of`], see
    /// [`Self::settle_usage`]; `day` for a reply admitted without a
    /// reservation) and, when it was one, the end of its live generation.
    /// None, one or two more actions in the settling transaction.
    pub(super) fn settled(
        &self,
        user: &UserId,
        reply: MessageId,
        reserved: Option<Reservation>,
        counts: u64,
        day: NaiveDate,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let settlement = Settlement::of(reserved, counts, day);
        let mut items: Vec<TransactWriteItem> =
            self.settle_usage(user, settlement)?.into_iter().collect();
        if reserved.is_some_and(|r| r.live) {
            items.push(self.end_generation(user, reply)?);
        }
        Ok(items)
    }

    /// Settles a reply on its day's usage: adds what it counts, and lets its
    /// reservation go. `None` when nothing changes (no write needed).
    pub(super) fn settle_usage(
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
    pub(super) fn usage_update(&self, user: &UserId, day: NaiveDate) -> UpdateBuilder {
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
}

impl Quotas for DynamoStore {
    async fn daily_usage(
        &self,
        user: &UserId,
        day: chrono::NaiveDate,
    ) -> Result<DailyUsage, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, s(keys::usage_pk(user)))
            .key(keys::SK, s(keys::usage_sk(day)))
            .send()
            .await
            .map_err(backend("GetItem usage"))?;
        let item = out.item.as_ref();
        let tokens: u64 = number(item, attr::TOKENS)?;
        // Held tokens are signed: settlements add negative amounts.
        let held: i64 = number(item, attr::HELD)?;
        Ok(DailyUsage {
            messages: number(item, attr::MESSAGES)?,
            tokens,
            reserved: u64::try_from(held).unwrap_or(0).saturating_sub(tokens),
        })
    }
}

/// A usage item's number attribute `name` (0 when the item or attribute is
/// absent: nothing counted yet).
fn number<T>(item: Option<&Item>, name: &str) -> Result<T, StoreError>
where
    T: std::str::FromStr + Default,
    T::Err: std::fmt::Display,
{
    item.and_then(|i| i.get(name))
        .and_then(|v| v.as_n().ok())
        .map_or(Ok(T::default()), |v| v.parse::<T>())
        .map_err(|e| StoreError::Corrupt(format!("usage {name}: {e}")))
}
