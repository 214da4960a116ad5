//! The in-memory store's progress of replies being written, with the
//! DynamoDB store's conditions (only the holder saves; a relay is taken
//! only when none is alive).

use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::{
    domain::{ConversationId, MessageId, UserId},
    store::{Live, Progress, Relaying, StoreError},
};

impl Live for MemoryStore {
    async fn save_progress(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        relay: &str,
        progress: &Progress,
    ) -> Result<bool, StoreError> {
        let mut partitions = self.partitions.lock().unwrap();
        let partition = partitions.entry((user.clone(), conversation)).or_default();
        let holds = partition.live.get(&reply).is_none_or(|p| p.relay == relay);
        if holds {
            partition.live.insert(reply, progress.clone());
        }
        Ok(holds)
    }

    async fn progress(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
    ) -> Result<Option<Progress>, StoreError> {
        let partitions = self.partitions.lock().unwrap();
        Ok(partitions
            .get(&(user.clone(), conversation))
            .and_then(|p| p.live.get(&reply).cloned()))
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
        let mut partitions = self.partitions.lock().unwrap();
        let partition = partitions.entry((user.clone(), conversation)).or_default();
        let found = partition.live.entry(reply).or_default();
        let free = found.relay.is_empty() || found.beat < stale_before;
        if !free {
            return Ok(Relaying::Held(found.clone()));
        }
        found.relay = relay.to_owned();
        found.beat = at;
        Ok(Relaying::Taken(found.clone()))
    }
}
