//! The in-memory store's replies, as the DynamoDB store's `replies`.

use chrono::{DateTime, NaiveDate, Utc};

use super::{conversation_after, held_by, moved_to, MemoryStore};
use crate::refusal::Refusal;
use crate::{
    domain::{
        outcome_tokens, tokens_used, ConversationId, ConversationState, Message, MessageId,
        MessageStatus, ReplyOutcome, Reservation, Settlement, UserId,
    },
    store::{FinishResult, Live, PendingReply, Replies, StoreError},
};

impl Replies for MemoryStore {
    async fn add_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
    ) -> Result<(), StoreError> {
        self.refused_for_load()?;
        self.with(user, conversation, |c, messages| {
            held_by(c, reply.id)?;
            moved_to(c, messages, reply);
            c.state = ConversationState::Free;
            Ok(())
        })?;
        let tokens = tokens_used(&reply.content, reply.usage);
        let day = reply.created_at.date_naive();
        self.settle_reply(user, reply.id, reply.reserved, tokens, day);
        Ok(())
    }

    async fn add_pending_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
        relay: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(user, conversation, |c, messages| {
            held_by(c, reply.id)?;
            c.state = ConversationState::Waiting { reply: reply.id };
            c.message_count += 1;
            messages.push(reply.clone());
            Ok(())
        })?;
        if let Some(relay) = relay {
            let holding = crate::store::Progress {
                relay: relay.to_owned(),
                beat: Utc::now(),
                ..Default::default()
            };
            self.save_progress(user, conversation, reply.id, relay, &holding)
                .await?;
        }
        Ok(())
    }

    async fn finish_reply(
        &self,
        reply: PendingReply<'_>,
        outcome: &ReplyOutcome,
        at: DateTime<Utc>,
    ) -> Result<FinishResult, StoreError> {
        if matches!(outcome, ReplyOutcome::Complete { .. }) {
            self.refused_for_load()?;
        }
        let PendingReply {
            user,
            conversation,
            message,
            job_id,
            reserved,
        } = reply;
        let found = self.with(user, conversation, |c, messages| {
            let Some(m) = messages.iter_mut().find(|m| m.id == message) else {
                return Ok(FinishResult::Missing);
            };
            match &m.status {
                MessageStatus::Pending { job_id: j } if j != job_id => Ok(FinishResult::OtherJob),
                MessageStatus::Pending { .. } if c.state.reply() != Some(message) => {
                    Ok(FinishResult::Missing)
                }
                MessageStatus::Pending { .. } => {
                    let counts = outcome_tokens(outcome, reserved);
                    self.settle_reply(user, message, reserved, counts, at.date_naive());
                    conversation_after(c, outcome, at);
                    m.settle(outcome.clone());
                    Ok(FinishResult::Written)
                }
                _ => Ok(FinishResult::AlreadyFinal),
            }
        });
        match found {
            Err(StoreError::Refused(Refusal::NotFound)) => Ok(FinishResult::Missing),
            other => other,
        }
    }

    async fn abandon_reply(
        &self,
        user: &UserId,
        reply: MessageId,
        reserved: Reservation,
    ) -> Result<(), StoreError> {
        self.settle_reply(user, reply, Some(reserved), 0, Utc::now().date_naive());
        Ok(())
    }

    async fn release_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        reserved: Option<Reservation>,
    ) -> Result<(), StoreError> {
        let released = self.with(user, conversation, |c, _| {
            let held = c.state.reply() == Some(reply);
            if held {
                c.state = ConversationState::Free;
            }
            Ok(held)
        });
        match released {
            Ok(true) => {
                self.settle_reply(user, reply, reserved, 0, Utc::now().date_naive());
                Ok(())
            }
            Ok(false) | Err(StoreError::Refused(Refusal::NotFound)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn keep_cancelled_text(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
        text: &str,
        day: NaiveDate,
    ) -> Result<bool, StoreError> {
        let kept = {
            let mut partitions = self.partitions.lock().unwrap();
            let Some(p) = partitions.get_mut(&(user.clone(), conversation)) else {
                return Ok(false);
            };
            let cancelled = p.messages.iter_mut().find(|m| {
                m.id == message && m.status == MessageStatus::Cancelled && m.content.is_empty()
            });
            cancelled.map(|m| m.content = text.to_owned()).is_some()
        };
        if kept {
            self.settle(user, Settlement::of(None, tokens_used(text, None), day));
        }
        Ok(kept)
    }
}
