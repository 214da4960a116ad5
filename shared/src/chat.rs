//! The use cases: send a message, list conversations, read one. Pure
//! orchestration over [`ConversationStore`] and [`ChatModel`].

use std::{future::Future, time::Duration};

use chrono::Utc;
use tokio::time::Instant;

use crate::{
    domain::{
        Conversation, ConversationId, Message, MessageContent, MessageId, MessageStatus,
        ReplyOutcome, Role, Title, UserId,
    },
    runpod::{finish, Job, JobPoll, JobState, RunPodClient, RunPodError},
    store::{ConversationStore, FinishResult, Page, PageRequest, StoreError},
    webhook::Webhooks,
};

/// The model behind the chat: jobs that are submitted, then waited for.
pub trait ChatModel: Sync {
    /// Queues a job for `history` (oldest first, ending with the user's new
    /// message); RunPod posts the result to `webhook` when given.
    fn submit(
        &self,
        history: &[Message],
        webhook: Option<&str>,
        deadline: Instant,
    ) -> impl Future<Output = Result<String, RunPodError>> + Send;

    /// Polls until the job is final or `until` comes (the job keeps running).
    fn wait(
        &self,
        job_id: &str,
        until: Instant,
    ) -> impl Future<Output = Result<JobPoll, RunPodError>> + Send;

    /// Asks once where the job stands.
    fn poll(
        &self,
        job_id: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<JobPoll, RunPodError>> + Send;
}

impl ChatModel for RunPodClient {
    fn submit(
        &self,
        history: &[Message],
        webhook: Option<&str>,
        deadline: Instant,
    ) -> impl Future<Output = Result<String, RunPodError>> + Send {
        RunPodClient::submit(self, history, webhook, deadline)
    }

    fn wait(
        &self,
        job_id: &str,
        until: Instant,
    ) -> impl Future<Output = Result<JobPoll, RunPodError>> + Send {
        RunPodClient::wait(self, job_id, until)
    }

    fn poll(
        &self,
        job_id: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<JobPoll, RunPodError>> + Send {
        RunPodClient::poll(self, job_id, deadline)
    }
}

/// How much of a conversation goes to the model.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub max_messages: u32,
    pub max_chars: usize,
}

/// How pending replies are checked and when they give up.
#[derive(Debug, Clone, Copy)]
pub struct PendingPolicy {
    /// A reply pending longer than this is failed.
    pub max_age: Duration,
    /// Most pending replies checked at RunPod by one read.
    pub max_checks: usize,
}

#[derive(Debug)]
pub struct SendRequest {
    pub conversation_id: Option<ConversationId>,
    pub content: MessageContent,
}

/// Time limits of one send.
#[derive(Debug, Clone, Copy)]
pub struct SendTimes {
    /// Until when the reply is waited for before it is left pending.
    pub wait_until: Instant,
    /// The request's own deadline (less a margin).
    pub deadline: Instant,
}

#[derive(Debug)]
pub struct SendOutcome {
    pub conversation_id: ConversationId,
    pub user_message: Message,
    /// Complete, or pending when the model did not finish within the wait.
    pub reply: Message,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("conversation not found")]
    NotFound,
    #[error("a reply is still pending in this conversation")]
    ReplyPending,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Model(#[from] RunPodError),
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ChatError::NotFound,
            StoreError::ReplyPending => ChatError::ReplyPending,
            other => ChatError::Store(other),
        }
    }
}

/// Stores the user's message, submits the conversation to the model and
/// waits for the reply until `times.wait_until`. A reply that is not ready
/// by then is stored as pending with its job: the job is not cancelled, and
/// the webhook or a later read completes it.
///
/// The user's message is written before the model is called, so a model
/// failure loses nothing the user wrote.
#[allow(clippy::too_many_arguments)]
pub async fn send<S: ConversationStore, M: ChatModel>(
    store: &S,
    model: &M,
    webhooks: &Webhooks,
    limits: HistoryLimits,
    pending: PendingPolicy,
    user: &UserId,
    request: SendRequest,
    times: SendTimes,
) -> Result<SendOutcome, ChatError> {
    let now = Utc::now();
    let (conversation_id, mut history) = match request.conversation_id {
        None => {
            let title = Title::from_first_message(&request.content);
            let first = Message::new(Role::User, request.content.into_string(), now);
            let conversation = Conversation::started_with(title, &first);
            store
                .create_conversation(user, &conversation, &first)
                .await?;
            tracing::info!(conversation_id = %conversation.id, "conversation created");
            (conversation.id, vec![first])
        }
        Some(id) => {
            let recent = PageRequest {
                limit: limits.max_messages,
                cursor: None,
            };
            let (conversation, mut page) = store.conversation_page(user, id, &recent).await?;
            if conversation.pending_reply.is_some() {
                // Replies cannot interleave: the pending one must finish
                // first. It may have finished without anyone noticing yet.
                let policy = PendingPolicy {
                    max_checks: 1,
                    ..pending
                };
                if refresh_pending(
                    store,
                    model,
                    user,
                    id,
                    &mut page.items,
                    policy,
                    times.deadline,
                )
                .await?
                {
                    page = store.conversation_page(user, id, &recent).await?.1;
                }
                if page
                    .items
                    .iter()
                    .any(|m| matches!(m.status, MessageStatus::Pending { .. }))
                {
                    return Err(ChatError::ReplyPending);
                }
            }
            let message = Message::new(Role::User, request.content.into_string(), now);
            store.append_message(user, id, &message).await?;
            let mut history: Vec<Message> = page
                .items
                .into_iter()
                .filter(|m| m.status == MessageStatus::Complete)
                .collect();
            history.push(message);
            (id, history)
        }
    };
    let user_message = history
        .last()
        .cloned()
        .expect("history ends with the new message");
    bound_history(&mut history, limits.max_chars);

    let reply_id = MessageId::new();
    let webhook = webhooks.url_for(user, conversation_id, reply_id);
    let job_id = model
        .submit(&history, webhook.as_deref(), times.deadline)
        .await?;
    tracing::info!(job_id, "RunPod job submitted");
    let reply = match model.wait(&job_id, times.wait_until).await {
        Ok(JobPoll::Done(Ok(completion))) => {
            let reply = Message {
                id: reply_id,
                role: Role::Assistant,
                content: completion.text,
                created_at: Utc::now(),
                usage: completion.usage,
                status: MessageStatus::Complete,
            };
            store.append_message(user, conversation_id, &reply).await?;
            reply
        }
        Ok(JobPoll::Done(Err(e))) => return Err(e.into()),
        still_running => {
            if let Err(e) = still_running {
                // The job exists; whether it succeeds is for later to tell.
                tracing::warn!(job_id, error = %e, "could not follow the job; leaving the reply pending");
            }
            let mut reply = Message {
                id: reply_id,
                role: Role::Assistant,
                content: String::new(),
                created_at: Utc::now(),
                usage: None,
                status: MessageStatus::Pending { job_id },
            };
            store
                .add_pending_reply(user, conversation_id, &reply)
                .await?;
            tracing::info!(message_id = %reply.id, "reply pending");
            // The job may have finished between the last poll and the write
            // above, and its webhook found nothing to complete: look once more.
            refresh_pending(
                store,
                model,
                user,
                conversation_id,
                std::slice::from_mut(&mut reply),
                pending,
                times.deadline,
            )
            .await?;
            reply
        }
    };
    Ok(SendOutcome {
        conversation_id,
        user_message,
        reply,
    })
}

/// A short, safe reason for a failed reply, shown to the user.
fn failure_reason(e: &RunPodError) -> String {
    if e.is_timeout() {
        "the AI model did not answer in time".into()
    } else {
        "the AI model failed to answer".into()
    }
}

const EXPIRED: &str = "the reply expired before it could be collected";

/// Where a pending message's job stands, as an outcome to store (`None`
/// while it is still running and young enough to wait for).
async fn check_pending<M: ChatModel>(
    model: &M,
    message: &Message,
    max_age: Duration,
    deadline: Instant,
) -> Option<ReplyOutcome> {
    let MessageStatus::Pending { job_id } = &message.status else {
        return None;
    };
    let too_old = (Utc::now() - message.created_at)
        .to_std()
        .unwrap_or_default()
        > max_age;
    match model.poll(job_id, deadline).await {
        Ok(JobPoll::Done(Ok(c))) => Some(ReplyOutcome::Complete {
            text: c.text,
            usage: c.usage,
        }),
        Ok(JobPoll::Done(Err(e))) => {
            tracing::warn!(job_id, error = %e, "pending reply failed at RunPod");
            Some(ReplyOutcome::Failed {
                error: failure_reason(&e),
            })
        }
        // RunPod forgets results a while after they finish.
        Err(RunPodError::Status { status: 404, .. }) => Some(ReplyOutcome::Failed {
            error: EXPIRED.into(),
        }),
        Ok(JobPoll::Running) | Err(_) if too_old => Some(ReplyOutcome::Failed {
            error: EXPIRED.into(),
        }),
        Ok(JobPoll::Running) => None,
        Err(e) => {
            tracing::warn!(job_id, error = %e, "could not check a pending reply");
            None
        }
    }
}

/// Checks the pending messages among `messages` at RunPod (at most
/// `policy.max_checks`, concurrently) and stores those that have finished,
/// updating `messages` in place. Returns whether another finisher got there
/// first, so the caller should read the conversation again.
async fn refresh_pending<S: ConversationStore, M: ChatModel>(
    store: &S,
    model: &M,
    user: &UserId,
    conversation: ConversationId,
    messages: &mut [Message],
    policy: PendingPolicy,
    deadline: Instant,
) -> Result<bool, ChatError> {
    let pending: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| matches!(m.status, MessageStatus::Pending { .. }))
        .map(|(i, _)| i)
        .take(policy.max_checks)
        .collect();
    let checks = pending.iter().map(|&i| {
        let message = &messages[i];
        async move {
            (
                i,
                check_pending(model, message, policy.max_age, deadline).await,
            )
        }
    });
    let mut reread = false;
    for (i, outcome) in futures::future::join_all(checks).await {
        let Some(outcome) = outcome else { continue };
        let MessageStatus::Pending { job_id } = messages[i].status.clone() else {
            continue;
        };
        let at = Utc::now();
        match store
            .finish_reply(user, conversation, messages[i].id, &job_id, &outcome, at)
            .await?
        {
            FinishResult::Written => apply(&mut messages[i], outcome),
            FinishResult::AlreadyFinal => reread = true,
            FinishResult::Missing | FinishResult::OtherJob => {}
        }
    }
    Ok(reread)
}

fn apply(message: &mut Message, outcome: ReplyOutcome) {
    match outcome {
        ReplyOutcome::Complete { text, usage } => {
            message.content = text;
            message.usage = usage;
            message.status = MessageStatus::Complete;
        }
        ReplyOutcome::Failed { error } => message.status = MessageStatus::Failed { error },
    }
}

/// What a webhook delivery did.
#[derive(Debug, PartialEq, Eq)]
pub enum WebhookResult {
    /// The reply is now final (this delivery or an earlier one made it so).
    Stored,
    /// The job is not final yet; nothing to do.
    NotFinal,
}

/// Stores the job RunPod delivered to the webhook of `reply`. Idempotent: a
/// repeated delivery, or one racing a read, changes nothing a second time.
pub async fn receive_webhook<S: ConversationStore>(
    store: &S,
    (user, conversation, reply): (UserId, ConversationId, MessageId),
    job: Job,
) -> Result<WebhookResult, ChatError> {
    let job_id = job
        .id
        .clone()
        .ok_or_else(|| RunPodError::InvalidResponse("a job without an id".into()))?;
    if matches!(job.state()?, JobState::Queued | JobState::Running) {
        return Ok(WebhookResult::NotFinal);
    }
    let outcome = match finish(job) {
        Ok(c) => ReplyOutcome::Complete {
            text: c.text,
            usage: c.usage,
        },
        Err(e) => {
            tracing::warn!(job_id, error = %e, "webhook delivered a failed job");
            ReplyOutcome::Failed {
                error: failure_reason(&e),
            }
        }
    };
    match store
        .finish_reply(&user, conversation, reply, &job_id, &outcome, Utc::now())
        .await?
    {
        FinishResult::Written | FinishResult::AlreadyFinal => Ok(WebhookResult::Stored),
        // Not stored yet (RunPod retries a failed delivery) or not this job.
        FinishResult::Missing | FinishResult::OtherJob => Err(ChatError::NotFound),
    }
}

/// Drops the oldest messages until the history fits in `max_chars`; the
/// newest message always stays. A history sent to a chat template must open
/// with a user turn, so a leading assistant message goes too.
fn bound_history(history: &mut Vec<Message>, max_chars: usize) {
    let mut total = 0usize;
    let keep_from = history
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, m)| {
            total += m.content.chars().count();
            (total > max_chars && i + 1 < history.len()).then_some(i + 1)
        })
        .unwrap_or(0);
    history.drain(..keep_from);
    while history.len() > 1 && history[0].role == Role::Assistant {
        history.remove(0);
    }
}

pub async fn list_conversations<S: ConversationStore>(
    store: &S,
    user: &UserId,
    page: &PageRequest,
) -> Result<Page<Conversation>, ChatError> {
    Ok(store.list_conversations(user, page).await?)
}

/// A page of a conversation. Pending replies on it are checked at RunPod
/// and stored when they have finished.
pub async fn get_conversation<S: ConversationStore, M: ChatModel>(
    store: &S,
    model: &M,
    user: &UserId,
    id: ConversationId,
    page: &PageRequest,
    pending: PendingPolicy,
    deadline: Instant,
) -> Result<(Conversation, Page<Message>), ChatError> {
    let (conversation, mut messages) = store.conversation_page(user, id, page).await?;
    if messages
        .items
        .iter()
        .any(|m| matches!(m.status, MessageStatus::Pending { .. }))
        && refresh_pending(
            store,
            model,
            user,
            id,
            &mut messages.items,
            pending,
            deadline,
        )
        .await?
    {
        return Ok(store.conversation_page(user, id, page).await?);
    }
    Ok((conversation, messages))
}

pub async fn rename_conversation<S: ConversationStore>(
    store: &S,
    user: &UserId,
    id: ConversationId,
    title: &Title,
) -> Result<Conversation, ChatError> {
    Ok(store.rename_conversation(user, id, title).await?)
}

/// Deletes a conversation: gone from list, get and send as soon as this
/// returns. Its messages are purged here while `until` allows; whatever is
/// left, the purge function fed by the table's stream removes (it runs for
/// every deleted conversation and finds nothing when this finished).
pub async fn delete_conversation<S: ConversationStore>(
    store: &S,
    user: &UserId,
    id: ConversationId,
    until: Instant,
) -> Result<(), ChatError> {
    store.delete_conversation(user, id).await?;
    match store.purge_messages(user, id, until).await {
        Ok(true) => tracing::info!("conversation deleted with all its messages"),
        Ok(false) => {
            tracing::info!("conversation deleted; the stream purge removes the remaining messages")
        }
        Err(e) => {
            tracing::warn!(error = %e, "conversation deleted; purging its messages failed, the stream purge retries")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, text: &str) -> Message {
        Message::new(role, text.into(), Utc::now())
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
        bound_history(&mut h, 100);
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
        bound_history(&mut h, 13);
        // 5555 + 4444 + 3333 = 12 fits, 2222 would not.
        assert_eq!(texts(&h), ["3333", "4444", "5555"]);
        let mut h2 = h.clone();
        bound_history(&mut h2, 9);
        // 5555 + 4444 fit, but the assistant turn cannot open the history.
        assert_eq!(texts(&h2), ["5555"]);
    }

    #[test]
    fn newest_message_stays_even_when_alone_over_budget() {
        let mut h = vec![msg(Role::User, "old"), msg(Role::User, &"x".repeat(50))];
        bound_history(&mut h, 10);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].content.len(), 50);
    }
}
