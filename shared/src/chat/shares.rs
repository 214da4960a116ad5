//! Read-only share links: a copy of a conversation's active path as it is
//! when the link is made, readable without a token until it is revoked or
//! the conversation deleted.

use chrono::Utc;

use super::{Chat, ChatError};
use crate::{
    domain::{ConversationId, Share, ShareId, SharedConversation, UserId},
    refusal::Refusal,
    store::Store,
};

impl<S: Store, M> Chat<S, M> {
    /// Makes a link to the conversation as it is now (later messages are
    /// not shown): one read of its partition, one transaction.
    pub async fn share(&self, user: &UserId, id: ConversationId) -> Result<Share, ChatError> {
        let tree = self.store.tree(user, id).await?;
        let share = Share {
            id: ShareId::new(),
            created_at: Utc::now(),
        };
        let copy = SharedConversation::of(&tree.conversation, &tree.path, share.created_at);
        self.store.create_share(user, id, &share, &copy).await?;
        tracing::info!(messages = copy.messages.len(), "share link made");
        Ok(share)
    }

    /// The conversation's links, oldest first.
    pub async fn shares(&self, user: &UserId, id: ConversationId) -> Result<Vec<Share>, ChatError> {
        Ok(self.store.shares(user, id).await?)
    }

    /// Revokes a link: its copy is gone at once.
    pub async fn revoke_share(
        &self,
        user: &UserId,
        id: ConversationId,
        share: &ShareId,
    ) -> Result<(), ChatError> {
        self.store.revoke_share(user, id, share).await?;
        tracing::info!("share link revoked");
        Ok(())
    }

    /// What a link shows; `ShareNotFound` for a link that does not exist,
    /// was revoked, or whose conversation was deleted (the same answer).
    pub async fn shared(&self, share: &ShareId) -> Result<SharedConversation, ChatError> {
        match self.store.shared(share).await? {
            Some(copy) => Ok(copy),
            None => Err(ChatError::Refused(Refusal::ShareNotFound)),
        }
    }
}
