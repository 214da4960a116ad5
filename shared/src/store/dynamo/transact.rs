//! Sending transactions and reading why DynamoDB cancelled one: every
//! conditional write's errors are sorted here, by the position of each
//! action in its transaction and the reason DynamoDB gives for it.

use crate::refusal::Refusal;
use std::time::Duration;

use aws_sdk_dynamodb::{
    error::{ProvideErrorMetadata, SdkError},
    operation::transact_write_items::{
        builders::TransactWriteItemsFluentBuilder, TransactWriteItemsError,
        TransactWriteItemsOutput,
    },
    types::{builders::UpdateBuilder, AttributeValue, TransactWriteItem},
};

use super::{backend, items::Item};
use crate::store::StoreError;

/// Sends a transaction, again (up to twice, 20 then 40 ms later) when
/// DynamoDB cancelled it for a conflict with another transaction on the same
/// items (a webhook and a read finishing one reply together, say): on the
/// next try its conditions see what the other wrote, so the caller gets a
/// decision, not an error.
pub(super) async fn transact(
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
pub(super) fn transaction_failed<R>(
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
pub(super) fn cancellation_codes<R>(err: &SdkError<TransactWriteItemsError, R>) -> Vec<&str> {
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
pub(super) fn cancelled_for_load<R>(err: &SdkError<TransactWriteItemsError, R>) -> bool {
    let codes = cancellation_codes(err);
    codes.iter().any(|c| LOAD_REASONS.contains(c)) && !codes.contains(&"ConditionalCheckFailed")
}

/// Whether a transaction was cancelled only for conflicts, not conditions.
pub(super) fn is_conflict<R>(err: &SdkError<TransactWriteItemsError, R>) -> bool {
    let codes = cancellation_codes(err);
    !codes.is_empty() && codes.iter().all(|c| *c == "TransactionConflict")
}

/// Whether the send's count, the third item of a message write (after the
/// conversation's and the message's), is the condition that failed.
pub(super) fn quota_refused(reasons: &[(bool, Option<Item>)]) -> bool {
    reasons.get(2).is_some_and(|(failed, _)| *failed)
}

/// Whether the user's live generations, the fourth item of an admitting
/// write (after the send's count), is the condition that failed.
pub(super) fn live_refused(reasons: &[(bool, Option<Item>)]) -> bool {
    reasons.get(3).is_some_and(|(failed, _)| *failed)
}

/// A number attribute.
pub(super) fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn update_item(update: UpdateBuilder) -> Result<TransactWriteItem, StoreError> {
    let update = update.build().map_err(backend("building an Update"))?;
    Ok(TransactWriteItem::builder().update(update).build())
}

/// A failed `OWNED` condition is [`Refusal::NotFound`](crate::refusal::Refusal::NotFound): the conversation
/// is missing or someone else's, and the caller must not learn which.
pub(super) fn not_found_or_backend<E, R>(
    context: &'static str,
) -> impl FnOnce(SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| match e.as_service_error().and_then(ProvideErrorMetadata::code) {
        Some("ConditionalCheckFailedException") => StoreError::Refused(Refusal::NotFound),
        _ => backend(context)(e),
    }
}

/// For a transaction cancelled by its conditions: per action, whether its
/// condition failed and the item as it was (for actions that asked for it).
pub(super) fn failed_conditions<R>(
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

    /// An admitting write is [conversation, message, the send's count, the
    /// live generations]: which condition failed is read by position.
    #[test]
    fn a_refusal_is_read_by_the_position_of_the_action_that_failed() {
        let reasons = |codes: &[&str]| failed_conditions(&cancelled(codes)).unwrap();
        let quota = reasons(&["None", "None", "ConditionalCheckFailed", "None"]);
        assert!(quota_refused(&quota) && !live_refused(&quota));
        let live = reasons(&["None", "None", "None", "ConditionalCheckFailed"]);
        assert!(live_refused(&live) && !quota_refused(&live));
        // Without a cap the write has three actions; nothing reads a fourth.
        let three = reasons(&["ConditionalCheckFailed", "None", "None"]);
        assert!(!quota_refused(&three) && !live_refused(&three));
        // A cancellation for load alone names no failed condition.
        assert!(failed_conditions(&cancelled(&["None", "ThrottlingError"])).is_none());
    }
}
