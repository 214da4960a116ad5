//! One send: start or continue the conversation (the user's message is
//! stored first, so a model failure loses nothing the user wrote), submit
//! the job, wait for it, and settle the reply as complete or pending.

use crate::refusal::Refusal;
use std::sync::Arc;

use chrono::Utc;
use tokio::time::Instant;

use super::{
    Chat, ChatError, ChatModel, Generation, JobRef, ModelError, PendingPolicy, Prompt, Sampling,
};
use crate::{
    catalogue::ModelSpec,
    domain::{
        message_tokens_estimate, Claim, Conversation, ConversationId, Message, MessageContent,
        MessageId, MessageStatus, Reservation, Role, Settings, SettingsPatch, Title, UserId,
        TEMPLATE_TOKENS_ONCE,
    },
    store::{PageRequest, Quota, Store, StoreError},
};

/// Time a job's cancel gets when the deadline has gone into a store call
/// that failed: the deadline's margin leaves room for it.
const CANCEL_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

/// What a send asks for.
#[derive(Debug)]
pub enum SendKind {
    /// A new message, at the end of the active path.
    Message(MessageContent),
    /// Another reply to the question this assistant message answers: a
    /// new version of it, the active path ending in the new reply.
    Regenerate(MessageId),
    /// A new version of this user message, with its reply: the active path
    /// ends in that reply.
    Edit(MessageId, MessageContent),
}

/// What the user sent.
#[derive(Debug)]
pub struct SendRequest {
    /// The conversation to continue; `None` starts a new one (only with
    /// [`SendKind::Message`]).
    pub conversation_id: Option<ConversationId>,
    /// The new message, or the version asked for.
    pub kind: SendKind,
    /// Changes to the conversation's settings, made before this turn (on
    /// a new conversation, its settings).
    pub settings: SettingsPatch,
}

/// Time limits of one send.
#[derive(Debug, Clone, Copy)]
pub struct SendTimes {
    /// Until when the reply is waited for before it is left pending.
    pub wait_until: Instant,
    /// The request's own deadline (less a margin).
    pub deadline: Instant,
}

/// What a send stored.
#[derive(Debug)]
pub struct SendOutcome {
    /// The conversation, new or continued.
    pub conversation_id: ConversationId,
    /// The user's message as stored.
    pub user_message: Message,
    /// Complete, or pending when the model did not finish within the wait.
    pub reply: Message,
}

/// What a job asks, owned until it is submitted ([`Ask::prompt`]).
#[derive(Debug)]
pub(super) struct Ask {
    /// The model, as the catalogue had it when the send began.
    model: Arc<ModelSpec>,
    instructions: Option<Arc<str>>,
    sampling: Sampling,
    /// Oldest first, ending with the user's new message.
    pub(super) history: Vec<Message>,
}

impl Ask {
    /// The job's request.
    pub(super) fn prompt(&self) -> Prompt<'_> {
        Prompt {
            model: &self.model,
            instructions: self.instructions.as_deref(),
            sampling: self.sampling,
            history: &self.history,
        }
    }

    /// The job, once submitted.
    pub(super) fn job<'a>(&'a self, id: &'a str) -> JobRef<'a> {
        JobRef {
            model: &self.model,
            id,
        }
    }

    /// The reply of job `job_id`, as stored while it is generated.
    pub(super) fn pending_reply(
        &self,
        id: MessageId,
        job_id: String,
        reserved: Option<Reservation>,
    ) -> Message {
        Message {
            id,
            role: Role::Assistant,
            content: String::new(),
            created_at: Utc::now(),
            usage: None,
            status: MessageStatus::Pending { job_id },
            truncated: false,
            reserved,
            model: Some(self.model.id.clone()),
            parent: None,
            versions: vec![],
            children: vec![],
            feedback: None,
        }
    }
}

/// The stored user message and what goes to the model with it.
pub(crate) struct Turn {
    pub(super) conversation_id: ConversationId,
    /// What goes to the model.
    pub(super) ask: Ask,
    /// The user's message as stored.
    pub(super) user_message: Message,
    /// The reply the conversation is claimed for.
    pub(super) reply_id: MessageId,
    /// What the reply holds of the day's token quota.
    pub(super) reserved: Reservation,
}

impl<S: Store, M: ChatModel> Chat<S, M> {
    /// Stores the user's message, submits the conversation to the model and
    /// waits for the reply until `times.wait_until`. A reply that is not
    /// ready by then is stored as pending with its job: the job is not
    /// cancelled, and the webhook or a later read completes it.
    pub async fn send(
        &self,
        user: &UserId,
        request: SendRequest,
        times: SendTimes,
    ) -> Result<SendOutcome, ChatError> {
        let turn = self.begin(user, request, times).await?;
        let (reply_id, conversation) = (turn.reply_id, turn.conversation_id);
        let webhook = self.webhooks.url_for(user, conversation, reply_id);
        // One call queues the job and holds until it ends or the wait does
        // (RunPod's runsync): the reply is here as soon as the job ends.
        let (submitted, waited) = match self
            .model
            .submit_and_wait(
                &turn.ask.prompt(),
                webhook.as_deref(),
                times.deadline,
                times.wait_until,
            )
            .await
        {
            Ok((job_id, waited)) => (Ok(job_id), waited),
            Err(e) => (Err(e), Ok(Generation::Running)),
        };
        let job_id = self
            .job_or_released(user, conversation, reply_id, Some(turn.reserved), submitted)
            .await?;
        let reply = turn
            .ask
            .pending_reply(reply_id, job_id, Some(turn.reserved));
        let reply = self
            .settle(user, conversation, reply, waited, times.deadline)
            .await?;
        // A send answers with a reply, or says it is pending: a reply that
        // ended otherwise while it waited (its job failed, a stop) is that
        // ending's error, never a "pending" answer that is not.
        match &reply.status {
            MessageStatus::Failed { error } => {
                return Err(ModelError::Failed(error.clone().into()).into());
            }
            MessageStatus::Cancelled => return Err(ChatError::Refused(Refusal::ReplyCancelled)),
            MessageStatus::Complete | MessageStatus::Pending { .. } => {}
        }
        Ok(SendOutcome {
            conversation_id: conversation,
            user_message: turn.user_message,
            reply,
        })
    }

    /// The first half of a send, streamed or not: the user's message
    /// stored with the conversation claimed for the reply, and the history
    /// to send the model.
    pub(super) async fn begin(
        &self,
        user: &UserId,
        request: SendRequest,
        times: SendTimes,
    ) -> Result<Turn, ChatError> {
        let now = Utc::now();
        // The user's message sorts before its reply (ids are time-ordered,
        // and the path is read in key order): its id comes first.
        let message_id = MessageId::new();
        let claim = Claim {
            reply: MessageId::new(),
            until: crate::deadline::hold_lapses(times.deadline),
        };
        let quota = self.quota.at(now);
        let settings = &request.settings;
        let (id, content) = match (request.conversation_id, request.kind) {
            (id, SendKind::Message(content)) => (id, content),
            (Some(id), kind) => {
                let held = (&claim, quota);
                let at = (message_id, now);
                return self
                    .branch_with(user, id, kind, at, held, settings, times.deadline)
                    .await;
            }
            // A version of a message names its conversation (the HTTP
            // layer refuses the body before this).
            (None, _) => return Err(ChatError::Refused(Refusal::MessageNotFound)),
        };
        let message = Message {
            id: message_id,
            ..Message::new(Role::User, content.as_str().to_owned(), now)
        };
        match id {
            None => {
                self.start(user, &content, message, (&claim, quota), settings)
                    .await
            }
            Some(id) => {
                self.continue_with(user, id, message, (&claim, quota), settings, times.deadline)
                    .await
            }
        }
    }

    /// The conversation and its newest `limit` messages, with no reply
    /// pending: one that finished without anyone noticing yet is
    /// collected first; one still running refuses the send.
    pub(super) async fn free_page(
        &self,
        user: &UserId,
        id: ConversationId,
        limit: u32,
        deadline: Instant,
    ) -> Result<(Conversation, Vec<Message>, bool), ChatError> {
        let recent = PageRequest {
            limit,
            cursor: None,
        };
        let (conversation, mut page) = self.store.conversation_page(user, id, &recent).await?;
        if conversation.state.reply().is_some() {
            // Replies cannot interleave: the pending one must finish first.
            // It may have finished without anyone noticing yet.
            let policy = PendingPolicy {
                max_checks: 1,
                ..self.pending
            };
            if self
                .refresh_pending(user, id, &mut page.items, policy, deadline)
                .await?
            {
                page = self.store.conversation_page(user, id, &recent).await?.1;
            }
            if page.items.iter().any(Message::is_pending) {
                return Err(ChatError::Refused(Refusal::ReplyPending));
            }
        }
        Ok((conversation, page.items, page.next_cursor.is_some()))
    }

    /// What goes to the model, from the conversation's settings, its
    /// recent complete messages and the new one, and what its reply
    /// reserves: known before the write that admits the send, which holds
    /// the reservation. Settings the send changes are checked against the
    /// catalogue here, before anything is stored; stored ones are taken as
    /// they are (a model that left the catalogue is the default's, a
    /// `max_tokens` above the model's limit is cut to it).
    pub(super) fn ask(
        &self,
        settings: &Settings,
        changed: bool,
        mut history: Vec<Message>,
        quota: &mut Quota,
    ) -> Result<(Ask, Reservation), ChatError> {
        let model = if changed {
            self.catalogue.check(settings)?
        } else {
            self.catalogue.model_for(settings)
        };
        let instructions = match &settings.instructions {
            Some(own) => Some(Arc::from(own.as_str())).filter(|t: &Arc<str>| !t.is_empty()),
            None => self.catalogue.system_prompt.clone(),
        };
        let max_tokens = settings
            .max_tokens
            .unwrap_or(model.max_output_tokens)
            .min(model.max_output_tokens);
        let budget = Budget {
            chars: self.limits.max_chars,
            tokens: history_tokens(model.context_tokens, max_tokens, instructions.as_deref()),
        };
        bound_history(&mut history, budget);
        merge_consecutive_user_turns(&mut history);
        let ask = Ask {
            model: Arc::clone(model),
            instructions,
            sampling: Sampling {
                max_tokens,
                temperature: settings.temperature,
                top_p: settings.top_p,
            },
            history,
        };
        let reserved = self.reservation(&ask.prompt(), quota.day);
        quota.reserve = reserved.tokens;
        Ok((ask, reserved))
    }

    /// A new conversation, titled after its first message, stored with it
    /// and claimed for the reply.
    async fn start(
        &self,
        user: &UserId,
        content: &MessageContent,
        first: Message,
        (claim, mut quota): (&Claim, Quota),
        settings: &SettingsPatch,
    ) -> Result<Turn, ChatError> {
        let title = Title::from_first_message(content);
        let mut conversation = Conversation::started_with(title, &first).claimed(claim);
        conversation.settings = settings.applied_to(&Settings::default());
        let (ask, reserved) = self.ask(
            &conversation.settings,
            true,
            vec![first.clone()],
            &mut quota,
        )?;
        self.store
            .start_conversation(user, &conversation, &first, &quota)
            .await?;
        tracing::info!(conversation_id = %conversation.id, "conversation created");
        Ok(Turn {
            conversation_id: conversation.id,
            user_message: first,
            ask,
            reply_id: claim.reply,
            reserved,
        })
    }

    /// Appends the user's message to a conversation whose previous reply is
    /// final, claiming it for the reply in the same write (a concurrent send
    /// loses there and stores nothing); its recent complete messages go to
    /// the model with it.
    async fn continue_with(
        &self,
        user: &UserId,
        id: ConversationId,
        message: Message,
        (claim, mut quota): (&Claim, Quota),
        changes: &SettingsPatch,
        deadline: Instant,
    ) -> Result<Turn, ChatError> {
        let (conversation, recent, _) = self
            .free_page(user, id, self.limits.max_messages, deadline)
            .await?;
        let mut history: Vec<Message> = recent
            .into_iter()
            .filter(|m| m.status == MessageStatus::Complete)
            .collect();
        history.push(message.clone());
        let settings = changes.applied_to(&conversation.settings);
        let (ask, reserved) = self.ask(&settings, !changes.is_empty(), history, &mut quota)?;
        self.store
            .append_and_claim(user, id, &message, claim, &quota, changes)
            .await?;
        Ok(Turn {
            conversation_id: id,
            ask,
            user_message: message,
            reply_id: claim.reply,
            reserved,
        })
    }

    /// Stores the reply as the wait left it: complete, or pending with its
    /// job. A failed job stores nothing, frees the conversation, and is the
    /// send's error.
    async fn settle(
        &self,
        user: &UserId,
        conversation: ConversationId,
        mut reply: Message,
        waited: Result<Generation, super::ModelError>,
        deadline: Instant,
    ) -> Result<Message, ChatError> {
        match waited {
            Ok(Generation::Done(Ok(completion))) => {
                let pending = reply.clone();
                reply.settle(completion.kept(self.limits.max_reply_chars));
                return match self.store.add_reply(user, conversation, &reply).await {
                    Ok(()) => Ok(reply),
                    // A paid reply is not dropped because the table is busy:
                    // recorded pending with its job, the next read or the
                    // webhook stores it (RunPod keeps a run's result 30 min).
                    Err(e @ StoreError::Unavailable { .. }) => {
                        tracing::warn!(error = %e, "the reply could not be stored now; leaving it pending");
                        self.record_pending(user, conversation, &pending, None, deadline)
                            .await?;
                        Ok(pending)
                    }
                    // Like a failed job: nothing stored, the conversation freed.
                    Err(e @ StoreError::Backend { .. }) => {
                        tracing::error!(error = %e, "the reply could not be stored");
                        let unstorable = ModelError::Failed(super::pending::UNSTORABLE.into());
                        Err(self
                            .released(
                                user,
                                conversation,
                                reply.id,
                                reply.reserved,
                                unstorable.into(),
                            )
                            .await)
                    }
                    Err(e) => {
                        if let StoreError::Refused(Refusal::NotFound) = e {
                            // Deleted while the job ran: nothing will settle it.
                            self.abandon(user, &reply).await;
                        }
                        Err(e.into())
                    }
                };
            }
            Ok(Generation::Done(Err(e))) => {
                let error = e.into();
                return Err(self
                    .released(user, conversation, reply.id, reply.reserved, error)
                    .await);
            }
            Ok(Generation::Running) => {}
            Err(e) => {
                // The job exists; whether it succeeds is for later to tell.
                tracing::warn!(error = %e, "could not follow the job; leaving the reply pending");
            }
        }
        self.record_pending(user, conversation, &reply, None, deadline)
            .await?;
        // The job may have finished between the last poll and the write
        // above, and its webhook found nothing to complete: look once more.
        self.refresh_pending(
            user,
            conversation,
            std::slice::from_mut(&mut reply),
            self.pending,
            deadline,
        )
        .await?;
        Ok(reply)
    }

    /// Stores `reply`, pending with its job. A reply that cannot be
    /// recorded has its job cancelled.
    pub(super) async fn record_pending(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: &Message,
        relay: Option<&str>,
        deadline: Instant,
    ) -> Result<(), ChatError> {
        let stored = self
            .store
            .add_pending_reply(user, conversation, reply, relay)
            .await;
        if let (Err(e), MessageStatus::Pending { job_id }) = (&stored, &reply.status) {
            // Nobody can collect a reply that is not recorded (deleted while
            // the job ran, or a table that did not answer): stop paying for
            // it. A write that timed out may have landed; its reply then
            // ends failed when read, and the conversation is free again.
            tracing::warn!(job_id, error = %e, "the pending reply is not recorded; cancelling its job");
            let budget = deadline.max(Instant::now() + CANCEL_BUDGET);
            self.cancel_job(self.job_of(reply, job_id), budget).await;
        }
        if let Err(StoreError::Refused(Refusal::NotFound)) = &stored {
            // Deleted while the job ran: nothing will settle the reply.
            self.abandon(user, reply).await;
        }
        stored?;
        tracing::info!(message_id = %reply.id, "reply pending");
        Ok(())
    }

    /// The job a send submitted; a submission that failed frees the
    /// conversation the send claimed and is the send's error.
    pub(super) async fn job_or_released(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        reserved: Option<Reservation>,
        submitted: Result<String, ModelError>,
    ) -> Result<String, ChatError> {
        match submitted {
            Ok(job_id) => {
                tracing::info!(job_id, "model job submitted");
                Ok(job_id)
            }
            Err(e) => Err(self
                .released(user, conversation, reply, reserved, e.into())
                .await),
        }
    }

    /// Lets go of what a reply whose conversation was deleted held (its
    /// reservation, its place among the live generations); a failure is
    /// only logged (the reservation then ends with the day, the place when
    /// it is stale).
    pub(super) async fn abandon(&self, user: &UserId, reply: &Message) {
        let Some(reserved) = reply.reserved else {
            return;
        };
        if let Err(e) = self.store.abandon_reply(user, reply.id, reserved).await {
            tracing::warn!(error = %e, "could not let an abandoned reply's reservation go");
        }
    }

    /// Frees the conversation a failed send claimed, and the reply's
    /// reservation; `error` is the send's answer either way (a claim that
    /// cannot be released lapses, its reservation held until the day ends).
    async fn released(
        &self,
        user: &UserId,
        conversation: ConversationId,
        reply: MessageId,
        reserved: Option<Reservation>,
        error: ChatError,
    ) -> ChatError {
        let release = self
            .store
            .release_claim(user, conversation, reply, reserved);
        if let Err(e) = release.await {
            tracing::warn!(error = %e, "could not release the claim; it lapses on its own");
        }
        error
    }
}

/// What of a conversation may go to the model.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// `HISTORY_MAX_CHARS`: a fallback upper bound, whatever the model.
    chars: usize,
    /// The model's room for the history ([`history_tokens`]).
    tokens: u64,
}

/// The tokens a model's context leaves for the history: its
/// `context_tokens` less the reply's `max_tokens`, the instructions and the
/// template's own, each estimated as a quota reservation's prompt is (one
/// token per four characters, and the template's tokens per message).
fn history_tokens(context_tokens: u32, max_tokens: u32, instructions: Option<&str>) -> u64 {
    let instructions = instructions.map_or(0, |t| message_tokens_estimate(t.chars().count()));
    u64::from(context_tokens)
        .saturating_sub(u64::from(max_tokens))
        .saturating_sub(instructions)
        .saturating_sub(TEMPLATE_TOKENS_ONCE)
}

/// Keeps the newest messages that fit the budget, in characters and in
/// estimated tokens ([`message_tokens_estimate`]); the newest message
/// always stays. A history sent to a chat template must open with a user
/// turn, so a leading assistant message goes too.
fn bound_history(history: &mut Vec<Message>, budget: Budget) {
    let (mut chars, mut tokens) = (0usize, 0u64);
    let keep_from = history
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, m)| {
            let n = m.content.chars().count();
            chars += n;
            tokens += message_tokens_estimate(n);
            let over = chars > budget.chars || tokens > budget.tokens;
            (over && i + 1 < history.len()).then_some(i + 1)
        })
        .unwrap_or(0);
    history.drain(..keep_from);
    while history.len() > 1 && history[0].role == Role::Assistant {
        history.remove(0);
    }
}

/// Joins user messages that follow one another (a failed or stopped reply
/// between them is not history) into one turn, so the model sees roles
/// that alternate: chat templates such as Mistral's and Gemma's under vLLM
/// refuse two user turns in a row, and would fail every later turn.
fn merge_consecutive_user_turns(history: &mut Vec<Message>) {
    let mut merged: Vec<Message> = Vec::with_capacity(history.len());
    for message in history.drain(..) {
        match merged.last_mut() {
            Some(last) if last.role == Role::User && message.role == Role::User => {
                last.content.push_str("\n\n");
                last.content.push_str(&message.content);
            }
            _ => merged.push(message),
        }
    }
    *history = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_user_turns_are_merged_so_roles_alternate() {
        let mut history = vec![
            msg(Role::User, "Hi"),
            msg(Role::Assistant, "Hello!"),
            msg(Role::User, "How do I organize patient files?"),
            msg(Role::User, "By date?"),
            msg(Role::User, "Or by doctor?"),
        ];
        merge_consecutive_user_turns(&mut history);
        assert_eq!(
            texts(&history),
            [
                "Hi",
                "Hello!",
                "How do I organize patient files?\n\nBy date?\n\nOr by doctor?"
            ]
        );
        let roles: Vec<_> = history.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
    }

    fn msg(role: Role, text: &str) -> Message {
        Message::new(role, text.into(), Utc::now())
    }

    fn chars(chars: usize) -> Budget {
        Budget {
            chars,
            tokens: u64::MAX,
        }
    }

    #[test]
    fn the_models_token_budget_cuts_the_history_newest_first() {
        // 400 characters: 100 tokens and 16 of template each.
        let text = "x".repeat(400);
        // Oldest first, ending with the user's new message.
        let turns = |n: usize| -> Vec<Message> {
            (0..n)
                .map(|i| {
                    let role = if (n - i) % 2 == 1 {
                        Role::User
                    } else {
                        Role::Assistant
                    };
                    msg(role, &text)
                })
                .collect()
        };
        let budget = |messages: u64| Budget {
            chars: usize::MAX,
            tokens: messages * 116,
        };
        let mut h = turns(6);
        bound_history(&mut h, budget(3));
        assert_eq!(h.len(), 3);
        // Four fit, but an assistant turn cannot open the history.
        let mut h = turns(6);
        bound_history(&mut h, budget(4));
        assert_eq!((h.len(), h[0].role), (3, Role::User));
        // Less than one: the newest stays.
        let mut h = turns(6);
        bound_history(&mut h, budget(0));
        assert_eq!(h.len(), 1);
        // context 8192 - reply 1024 - instructions (8 chars: 2 + 16) - 64.
        assert_eq!(
            history_tokens(8192, 1024, Some("Be brief")),
            8192 - 1024 - 18 - 64
        );
        assert_eq!(history_tokens(100, 1024, None), 0);
    }

    fn texts(h: &[Message]) -> Vec<&str> {
        h.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn history_within_budget_is_untouched() {
        let mut h = vec![
            msg(Role::User, "a"),
            msg(Role::Assistant, "b"),
            msg(Role::User, "c"),
        ];
        bound_history(&mut h, chars(100));
        assert_eq!(texts(&h), ["a", "b", "c"]);
    }

    #[test]
    fn oldest_messages_go_first_and_history_opens_with_a_user_turn() {
        let mut h = vec![
            msg(Role::User, "1111"),
            msg(Role::Assistant, "2222"),
            msg(Role::User, "3333"),
            msg(Role::Assistant, "4444"),
            msg(Role::User, "5555"),
        ];
        bound_history(&mut h, chars(13));
        // 5555 + 4444 + 3333 = 12 fits, 2222 would not.
        assert_eq!(texts(&h), ["3333", "4444", "5555"]);
        let mut h2 = h.clone();
        bound_history(&mut h2, chars(9));
        // 5555 + 4444 fit, but the assistant turn cannot open the history.
        assert_eq!(texts(&h2), ["5555"]);
    }

    #[test]
    fn newest_message_stays_even_when_alone_over_budget() {
        let mut h = vec![msg(Role::User, "old"), msg(Role::User, &"x".repeat(50))];
        bound_history(&mut h, chars(10));
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].content.len(), 50);
    }
}
