//! Conversations stored through the service's own store, for the
//! benchmarks and the tests: one way to seed, so both measure and check
//! the same items.

use chat_shared::{
    domain::{Conversation, ConversationId, Message, Role, Title, UserId},
    App,
};
use futures::StreamExt;

/// The text of every seeded message after a conversation's first.
pub const SAMPLE_MESSAGE: &str = "Keep one folder per patient, named by a stable id, with dated sub-folders. Keep one folder per patient, named by a stable id, with dated sub-folders. Keep one folder per patient, named by a stable id, with dated sub-folders. ";

/// The first message of the `i`-th seeded conversation.
pub fn first_message(i: usize) -> String {
    format!("How do I organize patient files? ({i})")
}

/// The `i`-th message (from 1) of a conversation seeded by [`seed_messages`]:
/// [`SAMPLE_MESSAGE`] with its first characters replaced by `i`, so every
/// message is distinct and as long as the sample.
pub fn message_text(i: usize) -> String {
    let number = format!("{i:05} ");
    format!("{number}{}", &SAMPLE_MESSAGE[number.len()..])
}

/// Every message of a conversation seeded with `n` messages, oldest first.
pub fn message_texts(n: usize) -> Vec<String> {
    std::iter::once(first_message(0))
        .chain((1..n).map(message_text))
        .collect()
}

/// `n` one-message conversations of `user`, updated a second apart, 16
/// writes at a time; their ids, oldest first.
pub async fn seed_conversations<M>(app: &App<M>, user: &str, n: usize) -> Vec<ConversationId> {
    let user = UserId::parse(user).unwrap();
    let t0 = chrono::Utc::now() - chrono::Duration::days(30);
    futures::stream::iter(0..n)
        .map(|i| {
            let user = user.clone();
            async move {
                let at = t0 + chrono::Duration::seconds(i as i64);
                let first = Message::new(Role::User, first_message(i), at);
                let c = Conversation::started_with(
                    Title::from_stored(format!("Conversation {i}")),
                    &first,
                );
                app.chat
                    .store()
                    .create_conversation(&user, &c, &first)
                    .await
                    .unwrap();
                c.id
            }
        })
        .buffered(16)
        .collect()
        .await
}

/// One conversation of `user` with `n` messages, alternating user and
/// assistant ([`message_texts`] holds them).
pub async fn seed_messages<M>(app: &App<M>, user: &str, n: usize) -> ConversationId {
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
        let m = Message::new(role, message_text(i), at);
        app.chat
            .store()
            .append_message(&user, id, &m)
            .await
            .unwrap();
    }
    id
}

/// Regenerates the last reply of `user`'s conversation `id` `n` times
/// through the store's own branch write (as a regenerate's send makes it)
/// and reply write: the reply then has `n` more versions, off the path.
pub async fn seed_versions<M>(app: &App<M>, user: &str, id: ConversationId, n: usize) {
    use chat_shared::{
        chat::QuotaLimits,
        domain::{leaving, Claim, MessageId},
        store::{prelude::*, Branching, PageRequest},
    };
    let user = UserId::parse(user).unwrap();
    let store = app.chat.store();
    let newest = PageRequest {
        limit: 2,
        cursor: None,
    };
    for i in 0..n {
        let (_, page) = store.conversation_page(&user, id, &newest).await.unwrap();
        let [question, reply] = &page.items[..] else {
            panic!("a conversation ending in a question and its reply");
        };
        let now = chrono::Utc::now();
        let claim = Claim {
            reply: MessageId::new(),
            until: now + chrono::Duration::minutes(1),
        };
        let off = leaving(Some(question.id), std::slice::from_ref(reply));
        let branching = Branching {
            fork: Some(question.id),
            off: &off,
            message: None,
            leaf: question,
            at: now,
        };
        let quota = QuotaLimits::default().at(now);
        store
            .branch_and_claim(&user, id, &branching, &claim, &quota, &Default::default())
            .await
            .unwrap();
        let version = Message {
            id: claim.reply,
            ..Message::new(Role::Assistant, message_text(i + 1), now)
        };
        store.add_reply(&user, id, &version).await.unwrap();
    }
}
