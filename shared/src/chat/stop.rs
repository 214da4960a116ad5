//! The stop that ends a reply early: a stream's, or a 202-pending one's.

use crate::refusal::Refusal;
use chrono::Utc;
use tokio::time::Instant;

use super::{Chat, ChatError, ChatModel};
use crate::{
    domain::{ConversationId, Message, MessageStatus, ReplyOutcome, UserId},
    store::{FinishResult, PageRequest, PendingReply, Store},
};

impl<S: Store, M: ChatModel> Chat<S, M> {
    /// Stops the reply being written in `conversation`: stored cancelled
    /// at once (with what a stream relaying it had written, which that
    /// stream adds), the conversation free for the next send, the job
    /// cancelled. `NoReplyInProgress` when nothing is being written.
    pub async fn stop(
        &self,
        user: &UserId,
        conversation: ConversationId,
        deadline: Instant,
    ) -> Result<Message, ChatError> {
        // The pending reply is the newest message: one read finds both.
        let newest = PageRequest {
            limit: 1,
            cursor: None,
        };
        let (stored, page) = self
            .store
            .conversation_page(user, conversation, &newest)
            .await?;
        let reply = page
            .items
            .into_iter()
            .find(|m| Some(m.id) == stored.state.reply())
            .ok_or(ChatError::Refused(Refusal::NoReplyInProgress))?;
        let MessageStatus::Pending { job_id } = &reply.status else {
            return Err(ChatError::Refused(Refusal::NoReplyInProgress));
        };
        let pending = PendingReply {
            user,
            conversation,
            message: reply.id,
            job_id,
            reserved: reply.reserved,
        };
        let outcome = ReplyOutcome::Cancelled {
            text: String::new(),
        };
        let result = self
            .store
            .finish_reply(pending, &outcome, Utc::now())
            .await?;
        if result != FinishResult::Written {
            return Err(ChatError::Refused(Refusal::NoReplyInProgress));
        }
        self.cancel_job(self.job_of(&reply, job_id), deadline).await;
        tracing::info!(message_id = %reply.id, "reply stopped");
        let mut stopped = reply.clone();
        stopped.settle(outcome);
        Ok(stopped)
    }
}
