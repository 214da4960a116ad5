//! Records of requests made under an `Idempotency-Key`: one item per user
//! and key (`store::keys`), taken with a conditional put, answered with the
//! first request's result, removed by DynamoDB's TTL after a day.

use std::time::Duration;

use aws_sdk_dynamodb::{
    operation::put_item::PutItemError,
    types::{AttributeValue, ReturnValuesOnConditionCheckFailure},
};
use chrono::{DateTime, Utc};

use super::{
    backend,
    items::{attr, s, Item},
    DynamoStore,
};
use crate::{
    domain::format_timestamp,
    store::{keys, Idempotency, KeyedRequest, KeyedStart, StoreError},
};

/// A record's state word while its first request runs.
const RUNNING: &str = "running";
/// ... and once it answered.
const DONE: &str = "done";

impl Idempotency for DynamoStore {
    async fn start_keyed(
        &self,
        request: KeyedRequest<'_>,
        lock_until: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<KeyedStart, StoreError> {
        let now = Utc::now();
        let expires = now.timestamp() + ttl.as_secs() as i64;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(keys::PK, s(keys::idempotency_pk(request.user)))
            .item(keys::SK, s(keys::idempotency_sk(request.key)))
            .item(attr::USER_ID, s(request.user.as_str()))
            .item(attr::BODY_HASH, s(request.body_hash))
            .item(attr::STATE, s(RUNNING))
            .item(attr::LOCK_UNTIL, s(format_timestamp(lock_until)))
            .item(attr::EXPIRES_AT, AttributeValue::N(expires.to_string()))
            // A record past its TTL may not be deleted yet; a running one
            // past its lock lost its request (the function died).
            .condition_expression(
                "attribute_not_exists(#pk) OR #exp < :epoch OR (#state = :running AND #lock < :now)",
            )
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#exp", attr::EXPIRES_AT)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#lock", attr::LOCK_UNTIL)
            .expression_attribute_values(":epoch", AttributeValue::N(now.timestamp().to_string()))
            .expression_attribute_values(":running", s(RUNNING))
            .expression_attribute_values(":now", s(format_timestamp(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(KeyedStart::Run),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(found(failed.item(), request.body_hash))
                }
                _ => Err(backend("PutItem idempotency key")(e)),
            },
        }
    }

    async fn finish_keyed(
        &self,
        request: KeyedRequest<'_>,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(keys::PK, s(keys::idempotency_pk(request.user)))
            .key(keys::SK, s(keys::idempotency_sk(request.key)))
            .update_expression("SET #state = :done, #status = :status, #body = :body")
            .condition_expression("#hash = :hash")
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#status", attr::RESPONSE_STATUS)
            .expression_attribute_names("#body", attr::RESPONSE_BODY)
            .expression_attribute_names("#hash", attr::BODY_HASH)
            .expression_attribute_values(":done", s(DONE))
            .expression_attribute_values(":status", AttributeValue::N(status.to_string()))
            .expression_attribute_values(":body", s(body))
            .expression_attribute_values(":hash", s(request.body_hash))
            .send()
            .await
            .map_err(backend("UpdateItem idempotency record"))?;
        Ok(())
    }

    async fn release_keyed(&self, request: KeyedRequest<'_>) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(keys::PK, s(keys::idempotency_pk(request.user)))
            .key(keys::SK, s(keys::idempotency_sk(request.key)))
            .condition_expression("#hash = :hash AND #state = :running")
            .expression_attribute_names("#hash", attr::BODY_HASH)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_values(":hash", s(request.body_hash))
            .expression_attribute_values(":running", s(RUNNING))
            .send()
            .await
            .map_err(backend("DeleteItem idempotency record"))?;
        Ok(())
    }
}

/// What a live record found in place of a new one means for the request.
fn found(record: Option<&Item>, body_hash: &str) -> KeyedStart {
    let text = |name: &str| record.and_then(|r| r.get(name)).and_then(|v| v.as_s().ok());
    if text(attr::BODY_HASH).map(String::as_str) != Some(body_hash) {
        return KeyedStart::Mismatch;
    }
    let status = record
        .and_then(|r| r.get(attr::RESPONSE_STATUS))
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok());
    match (
        text(attr::STATE).map(String::as_str),
        status,
        text(attr::RESPONSE_BODY),
    ) {
        (Some(DONE), Some(status), Some(body)) => KeyedStart::Replay {
            status,
            body: body.clone(),
        },
        _ => KeyedStart::InUse,
    }
}
