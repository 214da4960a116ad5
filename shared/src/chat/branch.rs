//! Branches: regenerate a reply, edit a question, switch the active path.
//!
//! A conversation is a tree; only its active path (first message to
//! leaf) is shown, paged and sent to the model. Regenerate and edit add a
//! version beside a message of the path and move what followed it off the
//! path, in the write that admits the send (claim, quota, count): nothing
//! is deleted, and a refusal stores nothing. A switch moves the path
//! through another version and on to its newest descendant.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{send::Turn, Chat, ChatError, ChatModel, SendKind};
use crate::{
    domain::{
        leaving, preview, Claim, Conversation, ConversationId, Message, MessageId, MessageStatus,
        Role, SettingsPatch, UserId, MAX_MOVED,
    },
    refusal::Refusal,
    store::{Branching, Quota, Store, Switch, Tree},
};

/// Most bytes of messages one change moves: DynamoDB's transaction holds
/// 4 MB in all, and the send's own items and the keys need some of it.
const MAX_MOVED_BYTES: usize = 3 << 20;

/// Whether one write can move `messages`: [`MAX_MOVED`] of them, within
/// [`MAX_MOVED_BYTES`] (each item's text and about 1 KB of attributes).
fn movable<'a>(messages: impl IntoIterator<Item = &'a Message>) -> Result<(), Refusal> {
    let (mut count, mut bytes) = (0, 0);
    for m in messages {
        count += 1;
        bytes += m.content.len() + 1024;
    }
    if count > MAX_MOVED || bytes > MAX_MOVED_BYTES {
        return Err(Refusal::TooFarBack);
    }
    Ok(())
}

/// The path from the first message through `target` and on to its newest
/// descendant (at each step the child created last), in `tree`; `None`
/// when `target` is not a message of it.
pub(crate) fn path_through(tree: &Tree, target: MessageId) -> Option<Vec<Message>> {
    let all: Vec<&Message> = tree.path.iter().chain(&tree.off).collect();
    let find = |id: MessageId| all.iter().find(|m| m.id == id).copied();
    let mut path = vec![find(target)?.clone()];
    while let Some(parent) = path.last().and_then(|m| m.parent) {
        path.push(find(parent)?.clone());
    }
    path.reverse();
    loop {
        let leaf = path.last().map(|m| m.id);
        let newest = all
            .iter()
            .filter(|m| m.parent == leaf && leaf.is_some())
            .max_by_key(|m| m.id);
        match newest {
            Some(child) => path.push((*child).clone()),
            None => return Some(path),
        }
    }
}

impl<S: Store, M: ChatModel> Chat<S, M> {
    /// A regenerate's or an edit's first half (as [`Chat::begin`]'s): the
    /// path moved and the conversation claimed for the reply in one write,
    /// the history up to the fork (and the edit's message) for the model.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn branch_with(
        &self,
        user: &UserId,
        id: ConversationId,
        kind: SendKind,
        (message_id, now): (MessageId, DateTime<Utc>),
        (claim, mut quota): (&Claim, Quota),
        changes: &SettingsPatch,
        deadline: Instant,
    ) -> Result<Turn, ChatError> {
        let (target, content) = match kind {
            SendKind::Regenerate(target) => (target, None),
            SendKind::Edit(target, content) => (target, Some(content)),
            SendKind::Message(_) => unreachable!("a new message is no branch"),
        };
        // The history and the messages the change moves, in one read.
        let window = self.limits.max_messages + MAX_MOVED as u32;
        let (conversation, path, more) = self.free_page(user, id, window, deadline).await?;
        let Some(at) = path.iter().position(|m| m.id == target) else {
            return Err(self.missing(user, id, target).await);
        };
        let wanted = match content {
            Some(_) => Role::User,
            None => Role::Assistant,
        };
        if path[at].role != wanted {
            return Err(Refusal::InvalidTarget.into());
        }
        let fork = path[at].parent;
        // The question a regenerate answers again: the reply's parent.
        let question = match (&content, at.checked_sub(1)) {
            (Some(_), _) => None,
            (None, Some(q)) if path[q].role == Role::User => Some(path[q].clone()),
            (None, Some(_)) => return Err(Refusal::InvalidTarget.into()),
            (None, None) if more => return Err(Refusal::TooFarBack.into()),
            (None, None) => return Err(Refusal::InvalidTarget.into()),
        };
        let suffix = &path[at..];
        movable(suffix)?;
        let message = content.map(|c| Message {
            id: message_id,
            ..Message::new(Role::User, c.as_str().to_owned(), now)
        });
        let first = at.saturating_sub(self.limits.max_messages as usize);
        let mut history: Vec<Message> = path[first..at]
            .iter()
            .filter(|m| m.status == MessageStatus::Complete)
            .cloned()
            .collect();
        history.extend(message.clone());
        let settings = changes.applied_to(&conversation.settings);
        let (ask, reserved) = self.ask(&settings, !changes.is_empty(), history, &mut quota)?;
        let off = leaving(fork, suffix);
        let user_message = message.clone().or(question).expect("an edit or a question");
        let branching = Branching {
            fork,
            off: &off,
            message: message.as_ref(),
            leaf: &user_message,
            at: now,
        };
        self.store
            .branch_and_claim(user, id, &branching, claim, &quota, changes)
            .await?;
        tracing::info!(moved = off.len(), "active path branched");
        Ok(Turn {
            conversation_id: id,
            ask,
            user_message,
            reply_id: claim.reply,
            reserved,
        })
    }

    /// Why a regenerate's or an edit's target is not on the path read: a
    /// message beyond it, off the path, or none of this conversation's.
    async fn missing(&self, user: &UserId, id: ConversationId, target: MessageId) -> ChatError {
        match self.store.tree(user, id).await {
            Ok(tree) if tree.path.iter().any(|m| m.id == target) => Refusal::TooFarBack.into(),
            Ok(tree) if tree.off.iter().any(|m| m.id == target) => Refusal::InvalidTarget.into(),
            Ok(_) => Refusal::MessageNotFound.into(),
            Err(e) => e.into(),
        }
    }
}

impl<S: Store, M> Chat<S, M> {
    /// Makes the active path run through `target` and on to its newest
    /// descendant: the whole conversation is read (a switch is rare; a
    /// page never reads what is off the path), then what leaves and what
    /// joins the path moves in one write. The conversation as it is after.
    pub async fn switch_branch(
        &self,
        user: &UserId,
        id: ConversationId,
        target: MessageId,
    ) -> Result<Conversation, ChatError> {
        let tree = self.store.tree(user, id).await?;
        let path = path_through(&tree, target).ok_or(Refusal::MessageNotFound)?;
        let common = tree
            .path
            .iter()
            .zip(&path)
            .take_while(|(a, b)| a.id == b.id)
            .count();
        let mut conversation = tree.conversation;
        if common == tree.path.len() && common == path.len() {
            return Ok(conversation);
        }
        let fork = common.checked_sub(1).map(|i| tree.path[i].id);
        let (suffix, on) = (&tree.path[common..], &path[common..]);
        movable(suffix.iter().chain(on))?;
        let off = leaving(fork, suffix);
        let leaf = path.last().expect("a path through a message");
        let switch = Switch {
            fork,
            off: &off,
            on,
            leaf,
        };
        self.store.switch_branch(user, id, &switch).await?;
        tracing::info!(off = off.len(), on = on.len(), "active path switched");
        conversation.message_count = path.len() as u64;
        conversation.last_message = preview(&leaf.content);
        Ok(conversation)
    }
}
