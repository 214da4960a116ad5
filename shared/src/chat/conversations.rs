//! Listing, reading, renaming and deleting conversations.

use futures::{Stream, StreamExt};
use tokio::time::Instant;

use super::{Chat, ChatError, ChatModel};
use crate::{
    domain::{
        Change, Conversation, ConversationId, ConversationState, Message, MessageStatus, Settings,
        UserId,
    },
    refusal::Refusal,
    store::{ConversationChange, Page, PageRequest, Store, Tree},
};

/// Conversations an export of them all reads at once: one page of the
/// list's reads overlap, and at most this many trees are held at a time.
pub const EXPORT_READS_AT_ONCE: usize = 4;

impl<S: Store, M> Chat<S, M> {
    /// The user's conversations, most recently updated first.
    pub async fn list_conversations(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, ChatError> {
        Ok(self.store.list_conversations(user, page).await?)
    }

    /// The conversation with every message of every branch (one read of
    /// its partition), to export.
    pub async fn export(&self, user: &UserId, id: ConversationId) -> Result<Tree, ChatError> {
        Ok(self.store.tree(user, id).await?)
    }

    /// A page of the user's list, each conversation read whole, in the
    /// list's order: [`EXPORT_READS_AT_ONCE`] reads in flight, so an
    /// export of thousands waits on one read's latency per that many. One
    /// deleted since the list was read is left out.
    pub fn export_each<'a>(
        &'a self,
        user: &'a UserId,
        page: Vec<Conversation>,
    ) -> impl Stream<Item = Result<Tree, ChatError>> + Send + 'a
    where
        M: Sync,
    {
        futures::stream::iter(page)
            .map(move |c| self.export(user, c.id))
            .buffered(EXPORT_READS_AT_ONCE)
            .filter_map(|read| async move {
                match read {
                    Err(ChatError::Refused(Refusal::NotFound)) => None,
                    other => Some(other),
                }
            })
    }

    /// Sets the title, changes the settings, or both; `updated_at` stays.
    /// The settings are checked against the catalogue first: a change to
    /// the model or to `max_tokens` alone is checked with the other as
    /// stored, which is read for it (the one case this reads first; a
    /// rename reads nothing).
    pub async fn update_conversation(
        &self,
        user: &UserId,
        id: ConversationId,
        change: &ConversationChange,
    ) -> Result<Conversation, ChatError> {
        let patch = &change.settings;
        let newest = PageRequest {
            limit: 1,
            cursor: None,
        };
        let read = || self.store.conversation_page(user, id, &newest);
        let rest = change.title.is_some() || !patch.is_empty();
        if !rest {
            return match change.active_message_id {
                Some(target) => self.switch_branch(user, id, target).await,
                // Nothing to change: the conversation as it is.
                None => Ok(read().await?.0),
            };
        }
        // A model's limit bounds `max_tokens`: a change to either is checked
        // with the other as stored, unless it gives both.
        let model_kept = matches!(patch.model, Change::Keep);
        let stored = if model_kept != matches!(patch.max_tokens, Change::Keep) {
            read().await?.0.settings
        } else {
            Settings::default()
        };
        self.catalogue.check(&patch.applied_to(&stored))?;
        // Checked before the switch, so a refused setting moves nothing.
        if let Some(target) = change.active_message_id {
            self.switch_branch(user, id, target).await?;
        }
        Ok(self.store.update_conversation(user, id, change).await?)
    }
}

impl<S: Store, M: ChatModel> Chat<S, M> {
    /// Deletes a conversation: gone from list, get and send as soon as this
    /// returns. Its messages are purged here while `until` allows; whatever
    /// is left, the purge function fed by the table's stream removes (it
    /// runs for every deleted conversation and finds nothing when this finished).
    pub async fn delete_conversation(
        &self,
        user: &UserId,
        id: ConversationId,
        until: Instant,
    ) -> Result<(), ChatError> {
        let deleted = self.store.delete_conversation(user, id).await?;
        // Nobody will read its pending reply: stop the job (a send still
        // running stops its own when its write finds the conversation gone).
        if let ConversationState::Waiting { reply } = deleted.state {
            match self.store.message(user, id, reply).await {
                Ok(Some(message)) => {
                    if let MessageStatus::Pending { job_id } = &message.status {
                        self.cancel_job(self.job_of(&message, job_id), until).await;
                        // Nothing will settle it now: let its reservation go.
                        self.abandon(user, &message).await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the pending reply to cancel its job")
                }
            }
        }
        match self.store.purge_messages(user, id, until).await {
            Ok(true) => tracing::info!("conversation deleted with all its messages"),
            Ok(false) => {
                tracing::info!(
                    "conversation deleted; the stream purge removes the remaining messages"
                )
            }
            Err(e) => {
                tracing::warn!(error = %e, "conversation deleted; purging its messages failed, the stream purge retries")
            }
        }
        Ok(())
    }

    /// A page of a conversation. Pending replies on it are checked at the
    /// model and stored when they have finished.
    pub async fn get_conversation(
        &self,
        user: &UserId,
        id: ConversationId,
        page: &PageRequest,
        deadline: Instant,
    ) -> Result<(Conversation, Page<Message>), ChatError> {
        let (conversation, mut messages) = self.store.conversation_page(user, id, page).await?;
        if messages.items.iter().any(Message::is_pending)
            && self
                .refresh_pending(user, id, &mut messages.items, self.pending, deadline)
                .await?
        {
            return Ok(self.store.conversation_page(user, id, page).await?);
        }
        Ok((conversation, messages))
    }
}
