//! The table's DynamoDB stream: when a conversation item is removed, its
//! message items are purged. This finishes any delete whose request ran out
//! of time, and is harmless (finds nothing) when the request finished it.

use serde::Deserialize;
use tokio::time::Instant;

use crate::store::{keys, Store, StoreError};

/// A batch of the table's stream records.
#[derive(Debug, Deserialize)]
pub struct StreamEvent {
    /// The records.
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

/// One change to one item.
#[derive(Debug, Deserialize)]
pub struct StreamRecord {
    /// `INSERT`, `MODIFY` or `REMOVE`.
    #[serde(rename = "eventName")]
    pub event_name: String,
    /// The changed item.
    pub dynamodb: StreamData,
}

/// What a record says of its item (only the keys are read).
#[derive(Debug, Deserialize)]
pub struct StreamData {
    /// The item's key.
    #[serde(rename = "Keys")]
    pub keys: StreamKeys,
}

/// An item's key.
#[derive(Debug, Deserialize)]
pub struct StreamKeys {
    /// The partition key.
    #[serde(rename = "PK")]
    pub pk: StringAttr,
    /// The sort key.
    #[serde(rename = "SK")]
    pub sk: StringAttr,
}

/// A string attribute in DynamoDB's JSON.
#[derive(Debug, Deserialize)]
pub struct StringAttr {
    /// The string.
    #[serde(rename = "S")]
    pub s: String,
}

/// Why a batch was not fully purged; Lambda delivers it again.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// The store failed.
    #[error("purging a deleted conversation's messages failed")]
    Store(#[from] StoreError),
    /// Time ran out with messages left.
    #[error("{0} deleted conversations still have messages; the batch is retried")]
    Incomplete(usize),
}

/// Purges the messages of every conversation removed in this batch. An
/// error makes Lambda deliver the batch again; purging is idempotent.
pub async fn purge_deleted<S: Store>(
    store: &S,
    event: &StreamEvent,
    until: Instant,
) -> Result<usize, PurgeError> {
    let mut purged = 0;
    let mut incomplete = 0;
    for record in &event.records {
        if record.event_name != "REMOVE" || record.dynamodb.keys.sk.s != keys::CONVERSATION_SK {
            continue;
        }
        let Some((user, conversation)) = keys::parse_conversation_pk(&record.dynamodb.keys.pk.s)
        else {
            tracing::warn!("stream record with an unknown partition key format, skipped");
            continue;
        };
        if store.purge_messages(&user, conversation, until).await? {
            purged += 1;
        } else {
            incomplete += 1;
        }
    }
    if incomplete > 0 {
        return Err(PurgeError::Incomplete(incomplete));
    }
    Ok(purged)
}
