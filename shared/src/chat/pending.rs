//! Replies that outlast their request: checked at the model by reads and
//! sends, completed by webhook deliveries, failed when they expire. Every
//! finisher writes through [`Store::finish_reply`], which
//! changes a reply once, so racing finishers cannot write twice.

use crate::refusal::Refusal;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::{
    Chat, ChatError, ChatModel, Completion, Generation, JobDelivery, JobRef, ModelError,
    PendingPolicy,
};
use crate::{
    domain::{ConversationId, Message, MessageStatus, ReplyOutcome, UserId},
    store::{FinishResult, PendingReply, Store, StoreError},
    webhook::WebhookTarget,
};

/// Why a reply that nobody could collect in time is failed.
const EXPIRED: &str = "the reply expired before it could be collected";
/// The reason of a finished reply the store refused.
pub(super) const UNSTORABLE: &str = "the reply could not be stored";

/// What a webhook delivery did.
#[derive(Debug, PartialEq, Eq)]
pub enum WebhookResult {
    /// The reply is now final (this delivery or an earlier one made it so).
    Stored,
    /// The job is not final yet; nothing to do.
    NotFinal,
}

impl<S: Store, M: ChatModel> Chat<S, M> {
    /// Completes the reply `target` names, woken by a delivery about its
    /// job. The delivery is only a trigger: the job's result is asked of
    /// the model's service, and a delivery that says the job ended while
    /// the service says it runs is ignored. Idempotent: a repeated
    /// delivery, or one racing a read, changes nothing a second time.
    pub async fn receive_webhook(
        &self,
        target: &WebhookTarget,
        delivery: JobDelivery,
        deadline: Instant,
    ) -> Result<WebhookResult, ChatError> {
        if !delivery.finished {
            return Ok(WebhookResult::NotFinal);
        }
        // The delivery's job id is the body's word: match it against the
        // stored reply's before it goes anywhere near a RunPod URL, and ask
        // RunPod about the stored one. A reply already final needs nothing
        // more (a repeated delivery costs no RunPod call).
        let (user, conversation) = (&target.user, target.conversation);
        let stored = self
            .store
            .message(user, conversation, target.message)
            .await?;
        let stored = match stored {
            Some(m) if m.is_pending() => m,
            None => return Err(ChatError::Refused(Refusal::NotFound)),
            Some(_) => return Ok(WebhookResult::Stored),
        };
        let job_id = match &stored.status {
            MessageStatus::Pending { job_id } if *job_id == delivery.job_id => job_id.as_str(),
            _ => return Err(ChatError::Refused(Refusal::NotFound)),
        };
        let reserved = stored.reserved;
        let outcome = match self
            .model
            .poll(self.job_of(&stored, job_id), deadline)
            .await
        {
            Ok(Generation::Done(result)) => self.final_outcome(result, job_id),
            Ok(Generation::Running) => return Ok(WebhookResult::NotFinal),
            Err(ModelError::UnknownJob(_)) => return Err(ChatError::Refused(Refusal::NotFound)),
            Err(e) => return Err(e.into()),
        };
        let reply = PendingReply {
            user: &target.user,
            conversation: target.conversation,
            message: target.message,
            job_id,
            reserved,
        };
        match self.store_outcome(reply, outcome).await?.0 {
            FinishResult::Written | FinishResult::AlreadyFinal => Ok(WebhookResult::Stored),
            // Not stored yet (RunPod retries a failed delivery) or not this job.
            FinishResult::Missing | FinishResult::OtherJob => {
                Err(ChatError::Refused(Refusal::NotFound))
            }
        }
    }
}

impl<S: Store, M> Chat<S, M> {
    /// Finishes `reply` with `outcome`; a complete reply the store refuses
    /// (too large for an item, say) ends failed with a reason instead.
    /// Returns what was stored.
    pub(super) async fn store_outcome(
        &self,
        reply: PendingReply<'_>,
        outcome: ReplyOutcome,
    ) -> Result<(FinishResult, ReplyOutcome), StoreError> {
        match self.store.finish_reply(reply, &outcome, Utc::now()).await {
            Err(e @ StoreError::Backend { .. })
                if matches!(outcome, ReplyOutcome::Complete { .. }) =>
            {
                tracing::error!(error = %e, "the reply could not be stored; storing it as failed");
                let failed = ReplyOutcome::Failed {
                    error: UNSTORABLE.into(),
                };
                let result = self.store.finish_reply(reply, &failed, Utc::now()).await?;
                Ok((result, failed))
            }
            result => Ok((result?, outcome)),
        }
    }
}

impl<S: Store, M: ChatModel> Chat<S, M> {
    /// Checks the pending messages among `messages` at the model (at most
    /// `policy.max_checks`, concurrently) and stores those that have
    /// finished, updating `messages` in place. Returns whether another
    /// finisher got there first, so the caller should read the conversation again.
    pub(super) async fn refresh_pending(
        &self,
        user: &UserId,
        conversation: ConversationId,
        messages: &mut [Message],
        policy: PendingPolicy,
        deadline: Instant,
    ) -> Result<bool, ChatError> {
        let checks =
            messages
                .iter()
                .enumerate()
                .filter(|(_, m)| m.is_pending())
                .take(policy.max_checks)
                .map(|(i, message)| async move {
                    (i, self.check(message, policy.max_age, deadline).await)
                });
        let outcomes = futures::future::join_all(checks).await;
        let mut reread = false;
        for (i, outcome) in outcomes {
            let Some(outcome) = outcome else { continue };
            let MessageStatus::Pending { job_id } = &messages[i].status else {
                continue;
            };
            let reply = PendingReply {
                user,
                conversation,
                message: messages[i].id,
                job_id,
                reserved: messages[i].reserved,
            };
            // A reply that cannot be stored must not fail every read of
            // its conversation: the read answers, showing it as it stands.
            match self.store_outcome(reply, outcome).await {
                Ok((FinishResult::Written, stored)) => messages[i].settle(stored),
                Ok((FinishResult::AlreadyFinal, _)) => reread = true,
                Ok((FinishResult::Missing | FinishResult::OtherJob, _)) => {}
                Err(e) => tracing::error!(error = %e, "could not store a finished reply"),
            }
        }
        Ok(reread)
    }

    /// Stops a job whose reply nobody will read; a failure is only logged
    /// (the job ends on its own at RunPod's execution timeout).
    pub(super) async fn cancel_job(&self, job: JobRef<'_>, deadline: Instant) {
        let job_id = job.id;
        match self.model.cancel(job, deadline).await {
            Ok(()) => tracing::info!(job_id, "job cancelled"),
            Err(e) => tracing::warn!(job_id, error = %e, "could not cancel the job"),
        }
    }

    /// Where a pending message's job stands, as an outcome to store (`None`
    /// while it is still running and young enough to wait for).
    async fn check(
        &self,
        message: &Message,
        max_age: Duration,
        deadline: Instant,
    ) -> Option<ReplyOutcome> {
        let MessageStatus::Pending { job_id } = &message.status else {
            return None;
        };
        let age = (Utc::now() - message.created_at)
            .to_std()
            .unwrap_or_default();
        let expired = || ReplyOutcome::Failed {
            error: EXPIRED.into(),
        };
        let job = self.job_of(message, job_id);
        match self.model.poll(job, deadline).await {
            Ok(Generation::Done(result)) => Some(self.final_outcome(result, job_id)),
            // The model's service forgets results a while after they finish.
            Err(ModelError::UnknownJob(_)) => Some(expired()),
            Ok(Generation::Running) | Err(_) if age > max_age => {
                // Nobody will wait for it any more: stop paying for it.
                self.cancel_job(job, deadline).await;
                Some(expired())
            }
            Ok(Generation::Running) => None,
            Err(e) => {
                tracing::warn!(job_id, error = %e, "could not check a pending reply");
                None
            }
        }
    }
}

impl<S, M> Chat<S, M> {
    /// The job of a pending `message`, at the model that writes it (the
    /// default for a reply stored before the catalogue).
    pub(super) fn job_of<'a>(&'a self, message: &'a Message, job_id: &'a str) -> JobRef<'a> {
        JobRef {
            model: self.catalogue.model_or_default(message.model.as_ref()),
            id: job_id,
        }
    }

    /// The outcome to store for a final job: the reply as kept (cut to
    /// `max_reply_chars`); a failure is logged with its cause and stored as
    /// a short, safe reason.
    pub(super) fn final_outcome(
        &self,
        result: Result<Completion, ModelError>,
        job_id: &str,
    ) -> ReplyOutcome {
        match result {
            Ok(c) => c.kept(self.limits.max_reply_chars),
            Err(e) => {
                tracing::warn!(job_id, error = %e, "the reply's job failed at the model");
                ReplyOutcome::Failed {
                    error: e.reason().into(),
                }
            }
        }
    }
}
