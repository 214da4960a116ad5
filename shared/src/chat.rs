//! The use cases: send a message, list conversations, read one. Pure
//! orchestration over [`ConversationStore`] and [`ChatModel`].

use std::future::Future;

use chrono::Utc;
use tokio::time::Instant;

use crate::{
    domain::{preview, Conversation, ConversationId, Message, MessageContent, Role, Title, UserId},
    runpod::{Completion, RunPodClient, RunPodError},
    store::{ConversationStore, Page, PageRequest, StoreError},
};

/// The model behind the chat.
pub trait ChatModel: Sync {
    /// `history` is oldest first and ends with the user's new message.
    fn complete(
        &self,
        history: &[Message],
        deadline: Instant,
    ) -> impl Future<Output = Result<Completion, RunPodError>> + Send;
}

impl ChatModel for RunPodClient {
    fn complete(
        &self,
        history: &[Message],
        deadline: Instant,
    ) -> impl Future<Output = Result<Completion, RunPodError>> + Send {
        self.generate(history, deadline)
    }
}

/// How much of a conversation goes to the model.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub max_messages: u32,
    pub max_chars: usize,
}

#[derive(Debug)]
pub struct SendRequest {
    pub conversation_id: Option<ConversationId>,
    pub content: MessageContent,
}

#[derive(Debug)]
pub struct SendOutcome {
    pub conversation_id: ConversationId,
    pub user_message: Message,
    pub reply: Message,
}

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("conversation not found")]
    NotFound,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Model(#[from] RunPodError),
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ChatError::NotFound,
            other => ChatError::Store(other),
        }
    }
}

/// Stores the user's message, asks the model, stores the reply.
///
/// The user's message is written before the model is called, so a model
/// failure loses nothing the user wrote.
pub async fn send<S: ConversationStore, M: ChatModel>(
    store: &S,
    model: &M,
    limits: HistoryLimits,
    user: &UserId,
    request: SendRequest,
    deadline: Instant,
) -> Result<SendOutcome, ChatError> {
    let now = Utc::now();
    let (conversation_id, mut history) = match request.conversation_id {
        None => {
            let conversation = Conversation {
                id: ConversationId::new(),
                title: Title::from_first_message(&request.content),
                last_message: preview(request.content.as_str()),
                created_at: now,
                updated_at: now,
                message_count: 1,
            };
            let first = Message::new(Role::User, request.content.into_string(), now);
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
            let (_, page) = store.conversation_page(user, id, &recent).await?;
            let message = Message::new(Role::User, request.content.into_string(), now);
            store.append_message(user, id, &message).await?;
            let mut history = page.items;
            history.push(message);
            (id, history)
        }
    };
    let user_message = history
        .last()
        .cloned()
        .expect("history ends with the new message");
    bound_history(&mut history, limits.max_chars);

    let completion = model.complete(&history, deadline).await?;
    let mut reply = Message::new(Role::Assistant, completion.text, Utc::now());
    reply.usage = completion.usage;
    store.append_message(user, conversation_id, &reply).await?;
    Ok(SendOutcome {
        conversation_id,
        user_message,
        reply,
    })
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

pub async fn get_conversation<S: ConversationStore>(
    store: &S,
    user: &UserId,
    id: ConversationId,
    page: &PageRequest,
) -> Result<(Conversation, Page<Message>), ChatError> {
    Ok(store.conversation_page(user, id, page).await?)
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
