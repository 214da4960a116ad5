//! Regenerate, edit and switch against the in-memory store: the path each
//! leaves, the history each job received, and the refusals that store
//! nothing.

use super::*;
use crate::refusal::Refusal;

/// Sends `kind` in `id`, the next job replying `reply`.
async fn ask(
    chat: &Chat<MemoryStore, ScriptedModel>,
    id: ConversationId,
    kind: SendKind,
    reply: &'static str,
) -> Result<SendOutcome, ChatError> {
    *chat.model().next.lock().unwrap() = Some(Script::Reply(reply));
    let request = SendRequest {
        conversation_id: Some(id),
        kind,
        settings: SettingsPatch::default(),
    };
    chat.send(&alice(), request, times()).await
}

fn text(t: &str) -> MessageContent {
    MessageContent::parse(t.into(), 1000).unwrap()
}

fn texts(messages: &[Message]) -> Vec<&str> {
    messages.iter().map(|m| m.content.as_str()).collect()
}

/// A conversation "q1" "a1" "q2" "a2": its id and its four messages.
async fn two_turns(chat: &Chat<MemoryStore, ScriptedModel>) -> (ConversationId, Vec<Message>) {
    *chat.model().next.lock().unwrap() = Some(Script::Reply("a1"));
    let id = send(chat, None, "q1").await.unwrap().conversation_id;
    ask(chat, id, SendKind::Message(text("q2")), "a2")
        .await
        .unwrap();
    let messages = read(chat, id).await;
    assert_eq!(texts(&messages), ["q1", "a1", "q2", "a2"]);
    (id, messages)
}

async fn count(chat: &Chat<MemoryStore, ScriptedModel>, id: ConversationId) -> u64 {
    let page = first_page(1);
    chat.store()
        .conversation_page(&alice(), id, &page)
        .await
        .unwrap()
        .0
        .message_count
}

#[tokio::test]
async fn a_regenerated_reply_is_a_new_version_and_the_model_sees_up_to_its_question() {
    let chat = chat(ScriptedModel::default());
    let (id, before) = two_turns(&chat).await;
    let out = ask(&chat, id, SendKind::Regenerate(before[3].id), "a2b")
        .await
        .unwrap();
    // The answer names the question it answers again.
    assert_eq!(out.user_message.id, before[2].id);
    assert_eq!(out.reply.content, "a2b");
    assert_eq!(chat.model().submitted()[2], ["q1", "a1", "q2"]);
    let after = read(&chat, id).await;
    assert_eq!(texts(&after), ["q1", "a1", "q2", "a2b"]);
    assert_eq!(after[3].parent, Some(before[2].id));
    assert_eq!(after[3].versions, [before[3].id, out.reply.id]);
    // The rest of the path has one version each.
    assert_eq!(after[0].parent, None);
    assert!(after[..3].iter().all(|m| m.versions == [m.id]));
    assert_eq!(count(&chat, id).await, 4);
    // Nothing is deleted: the first reply is kept off the path.
    assert_eq!(texts(&chat.store().off_path(&alice(), id)), ["a2"]);
}

#[tokio::test]
async fn an_edit_of_a_middle_message_drops_what_followed_from_the_history() {
    let chat = chat(ScriptedModel::default());
    let (id, before) = two_turns(&chat).await;
    ask(&chat, id, SendKind::Message(text("q3")), "a3")
        .await
        .unwrap();
    let out = ask(&chat, id, SendKind::Edit(before[2].id, text("q2b")), "a2b")
        .await
        .unwrap();
    assert_eq!(out.user_message.content, "q2b");
    assert_eq!(chat.model().submitted()[3], ["q1", "a1", "q2b"]);
    let after = read(&chat, id).await;
    assert_eq!(texts(&after), ["q1", "a1", "q2b", "a2b"]);
    assert_eq!(after[2].parent, Some(before[1].id));
    assert_eq!(after[2].versions, [before[2].id, out.user_message.id]);
    assert_eq!(after[3].versions, [out.reply.id]);
    assert_eq!(count(&chat, id).await, 4);
}

#[tokio::test]
async fn an_edit_of_the_first_message_starts_the_path_again() {
    let chat = chat(ScriptedModel::default());
    let (id, before) = two_turns(&chat).await;
    let out = ask(&chat, id, SendKind::Edit(before[0].id, text("q1b")), "a1b")
        .await
        .unwrap();
    assert_eq!(chat.model().submitted()[2], ["q1b"]);
    let after = read(&chat, id).await;
    assert_eq!(texts(&after), ["q1b", "a1b"]);
    assert_eq!(after[0].parent, None);
    assert_eq!(after[0].versions, [before[0].id, out.user_message.id]);
    assert_eq!(count(&chat, id).await, 2);
}

#[tokio::test]
async fn switching_back_and_forth_runs_the_path_through_each_version() {
    let chat = chat(ScriptedModel::default());
    let (id, before) = two_turns(&chat).await;
    let regenerated = ask(&chat, id, SendKind::Regenerate(before[3].id), "a2b")
        .await
        .unwrap()
        .reply;
    // Back to the first reply.
    let summary = chat
        .switch_branch(&alice(), id, before[3].id)
        .await
        .unwrap();
    assert_eq!(summary.message_count, 4);
    assert_eq!(summary.last_message, "a2");
    let back = read(&chat, id).await;
    assert_eq!(texts(&back), ["q1", "a1", "q2", "a2"]);
    assert_eq!(back[3].versions, [before[3].id, regenerated.id]);
    // A send continues the path switched to.
    ask(&chat, id, SendKind::Message(text("q3")), "a3")
        .await
        .unwrap();
    assert_eq!(chat.model().submitted()[3], ["q1", "a1", "q2", "a2", "q3"]);
    // Forward again: through "a2b", which has no later messages.
    chat.switch_branch(&alice(), id, regenerated.id)
        .await
        .unwrap();
    assert_eq!(texts(&read(&chat, id).await), ["q1", "a1", "q2", "a2b"]);
    // Through "a2" once more: on to its newest descendant.
    chat.switch_branch(&alice(), id, before[3].id)
        .await
        .unwrap();
    assert_eq!(
        texts(&read(&chat, id).await),
        ["q1", "a1", "q2", "a2", "q3", "a3"]
    );
    assert_eq!(count(&chat, id).await, 6);
    // Through a message already on the path: on to its newest
    // descendant too, at each step the child created last ("a2b").
    chat.switch_branch(&alice(), id, before[0].id)
        .await
        .unwrap();
    assert_eq!(texts(&read(&chat, id).await), ["q1", "a1", "q2", "a2b"]);
    // The first message's versions after an edit, then back to the first.
    let edited = ask(&chat, id, SendKind::Edit(before[0].id, text("q1b")), "a1b")
        .await
        .unwrap();
    assert_eq!(texts(&read(&chat, id).await), ["q1b", "a1b"]);
    chat.switch_branch(&alice(), id, before[1].id)
        .await
        .unwrap();
    let first = read(&chat, id).await;
    assert_eq!(texts(&first), ["q1", "a1", "q2", "a2b"]);
    assert_eq!(first[0].versions, [before[0].id, edited.user_message.id]);
    assert_eq!(count(&chat, id).await, 4);
}

#[tokio::test]
async fn a_regenerate_or_an_edit_while_a_reply_is_pending_is_refused() {
    let chat = chat(ScriptedModel::default());
    let (id, before) = two_turns(&chat).await;
    ask(&chat, id, SendKind::Regenerate(before[3].id), "a2b")
        .await
        .unwrap();
    *chat.model().next.lock().unwrap() = Some(Script::Running);
    let request = SendRequest {
        conversation_id: Some(id),
        kind: SendKind::Message(text("q3")),
        settings: SettingsPatch::default(),
    };
    let pending = chat.send(&alice(), request, times()).await.unwrap();
    assert!(pending.reply.is_pending());
    let jobs = chat.model().submitted().len();
    for kind in [
        SendKind::Regenerate(before[3].id),
        SendKind::Edit(before[2].id, text("q2b")),
    ] {
        let err = ask(&chat, id, kind, "x").await.unwrap_err();
        assert!(
            matches!(err, ChatError::Refused(Refusal::ReplyPending)),
            "{err:?}"
        );
    }
    // Back to the first "a2" would take the pending reply off the path.
    let err = chat
        .switch_branch(&alice(), id, before[3].id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ChatError::Refused(Refusal::ReplyPending)),
        "{err:?}"
    );
    assert_eq!(chat.model().submitted().len(), jobs);
    assert_eq!(texts(&chat.store().off_path(&alice(), id)), ["a2"]);
}

#[tokio::test]
async fn refused_targets_store_nothing_and_ask_nothing() {
    let chat = chat(ScriptedModel::default());
    let (id, before) = two_turns(&chat).await;
    let cases = [
        (SendKind::Regenerate(before[2].id), Refusal::InvalidTarget),
        (
            SendKind::Edit(before[3].id, text("x")),
            Refusal::InvalidTarget,
        ),
        (
            SendKind::Regenerate(MessageId::new()),
            Refusal::MessageNotFound,
        ),
        (
            SendKind::Edit(MessageId::new(), text("x")),
            Refusal::MessageNotFound,
        ),
    ];
    for (kind, refusal) in cases {
        let err = ask(&chat, id, kind, "x").await.unwrap_err();
        assert!(
            matches!(&err, ChatError::Refused(r) if *r == refusal),
            "{err:?}"
        );
    }
    // An off-path version is no target until switched to.
    let regenerated = ask(&chat, id, SendKind::Regenerate(before[3].id), "a2b")
        .await
        .unwrap();
    let jobs = chat.model().submitted().len();
    let err = ask(&chat, id, SendKind::Regenerate(before[3].id), "x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ChatError::Refused(Refusal::InvalidTarget)),
        "{err:?}"
    );
    let err = chat
        .switch_branch(&alice(), id, MessageId::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ChatError::Refused(Refusal::MessageNotFound)),
        "{err:?}"
    );
    // Another user's conversation is not found, whatever the message.
    let bob = UserId::parse("bob").unwrap();
    let request = SendRequest {
        conversation_id: Some(id),
        kind: SendKind::Regenerate(regenerated.reply.id),
        settings: SettingsPatch::default(),
    };
    let err = chat.send(&bob, request, times()).await.unwrap_err();
    assert!(
        matches!(err, ChatError::Refused(Refusal::NotFound)),
        "{err:?}"
    );
    assert_eq!(chat.model().submitted().len(), jobs);
    assert_eq!(count(&chat, id).await, 4);
    assert_eq!(texts(&read(&chat, id).await), ["q1", "a1", "q2", "a2b"]);
    assert_eq!(chat.store().off_path(&alice(), id).len(), 1);
}

#[tokio::test]
async fn a_change_that_moves_too_many_messages_is_refused() {
    let chat = chat(ScriptedModel::default());
    *chat.model().next.lock().unwrap() = Some(Script::Reply("a"));
    let first = send(&chat, None, "q").await.unwrap();
    let id = first.conversation_id;
    for _ in 0..crate::domain::MAX_MOVED / 2 {
        ask(&chat, id, SendKind::Message(text("q")), "a")
            .await
            .unwrap();
    }
    // The first message and every later one would leave the path.
    let err = ask(
        &chat,
        id,
        SendKind::Edit(first.user_message.id, text("x")),
        "x",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ChatError::Refused(Refusal::TooFarBack)),
        "{err:?}"
    );
    assert!(chat.store().off_path(&alice(), id).is_empty());
}

#[tokio::test]
async fn deleting_a_conversation_removes_every_branch() {
    let chat = chat(ScriptedModel::default());
    let (id, before) = two_turns(&chat).await;
    ask(&chat, id, SendKind::Regenerate(before[3].id), "a2b")
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    chat.delete_conversation(&alice(), id, until).await.unwrap();
    assert!(chat.store().messages(&alice(), id).is_empty());
    assert!(chat.store().off_path(&alice(), id).is_empty());
}
