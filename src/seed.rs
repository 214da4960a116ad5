//! Conversations stored through the service's own store, for the benchmarks.

use chat_shared::{
    domain::{Conversation, ConversationId, Message, Role, Title, UserId},
    store::ConversationStore,
    App,
};
use futures::StreamExt;

/// The text of every seeded message after a conversation's first.
pub const SAMPLE_MESSAGE: &str = "Keep one folder per patient, named by a stable id, with dated sub-folders. Keep one folder per patient, named by a stable id, with dated sub-folders. Keep one folder per patient, named by a stable id, with dated sub-folders. ";

/// `n` one-message conversations of `user`, 16 writes at a time.
pub async fn seed_conversations(app: &App, user: &str, n: usize) -> Vec<ConversationId> {
    let user = UserId::parse(user).unwrap();
    let t0 = chrono::Utc::now() - chrono::Duration::days(30);
    futures::stream::iter(0..n)
        .map(|i| {
            let user = user.clone();
            async move {
                let at = t0 + chrono::Duration::seconds(i as i64);
                let first = Message::new(
                    Role::User,
                    format!("How do I organize patient files? ({i})"),
                    at,
                );
                let c = Conversation::started_with(
                    Title::from_stored(format!("Conversation {i}")),
                    &first,
                );
                app.store
                    .create_conversation(&user, &c, &first)
                    .await
                    .unwrap();
                c.id
            }
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// One conversation of `user` with `n` messages, alternating user and assistant.
pub async fn seed_messages(app: &App, user: &str, n: usize) -> ConversationId {
    let id = seed_conversations(app, user, 1).await[0];
    let user = UserId::parse(user).unwrap();
    let t0 = chrono::Utc::now() - chrono::Duration::days(1);
    for i in 1..n {
        let role = if i % 2 == 1 {
            Role::Assistant
        } else {
            Role::User
        };
        let at = t0 + chrono::Duration::milliseconds(i as i64);
        let m = Message::new(role, SAMPLE_MESSAGE.to_owned(), at);
        app.store.append_message(&user, id, &m).await.unwrap();
    }
    id
}
