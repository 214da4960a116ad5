//! The in-memory store's share links, with the DynamoDB store's rules (the
//! user's conversation only; a link shows nothing once revoked or once its
//! conversation is deleted).

use super::MemoryStore;
use crate::{
    domain::{ConversationId, Share, ShareId, SharedConversation, UserId},
    refusal::Refusal,
    store::{Shares, StoreError},
};

impl Shares for MemoryStore {
    async fn create_share(
        &self,
        user: &UserId,
        conversation: ConversationId,
        share: &Share,
        copy: &SharedConversation,
    ) -> Result<(), StoreError> {
        let mut partitions = self.partitions.lock().unwrap();
        let partition = partitions
            .get_mut(&(user.clone(), conversation))
            .filter(|p| p.conversation.is_some())
            .ok_or(Refusal::NotFound)?;
        partition.shares.push(share.clone());
        let stored = (user.clone(), conversation, copy.clone());
        self.copies
            .lock()
            .unwrap()
            .insert(share.id.as_str().to_owned(), stored);
        Ok(())
    }

    async fn shares(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<Vec<Share>, StoreError> {
        let partitions = self.partitions.lock().unwrap();
        let partition = partitions
            .get(&(user.clone(), conversation))
            .filter(|p| p.conversation.is_some())
            .ok_or(Refusal::NotFound)?;
        Ok(partition.shares.clone())
    }

    async fn revoke_share(
        &self,
        user: &UserId,
        conversation: ConversationId,
        share: &ShareId,
    ) -> Result<(), StoreError> {
        let mut partitions = self.partitions.lock().unwrap();
        let partition = partitions
            .get_mut(&(user.clone(), conversation))
            .ok_or(Refusal::ShareNotFound)?;
        let before = partition.shares.len();
        partition.shares.retain(|s| &s.id != share);
        if partition.shares.len() == before {
            return Err(Refusal::ShareNotFound.into());
        }
        self.copies.lock().unwrap().remove(share.as_str());
        Ok(())
    }

    async fn shared(&self, share: &ShareId) -> Result<Option<SharedConversation>, StoreError> {
        // One lock at a time (the purge takes the partitions, then the copies).
        let found = self.copies.lock().unwrap().get(share.as_str()).cloned();
        let Some((user, conversation, copy)) = found else {
            return Ok(None);
        };
        let partitions = self.partitions.lock().unwrap();
        let alive = partitions
            .get(&(user, conversation))
            .is_some_and(|p| p.conversation.is_some());
        Ok(alive.then_some(copy))
    }
}
