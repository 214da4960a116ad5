//! [`ConversationStore`] in memory, with the DynamoDB store's conditions
//! (owner, "no reply pending", finish once), for the use-case tests: they
//! run in milliseconds and can reach branches that are slow or awkward to
//! set up over DynamoDB Local.

use crate::refusal::Refusal;
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use chrono::{DateTime, NaiveDate, Utc};
use tokio::time::Instant;

use super::{
    Branching, ConversationChange, Conversations, DailyUsage, Page, PageRequest, Pages, Quota,
    Quotas, StoreError, Switch, Tree,
};
use crate::domain::{
    preview, Claim, Conversation, ConversationId, ConversationState, Message, MessageId,
    ReplyOutcome, Reservation, SettingsPatch, Settlement, UserId,
};

mod keyed;
mod live;
mod ratings;
mod replies;
mod shares;

/// A conversation's partition: the conversation item (gone once deleted)
/// and its messages in creation order.
#[derive(Default)]
struct Partition {
    conversation: Option<Conversation>,
    /// The active path (the DynamoDB store's `MSG#` items).
    messages: Vec<Message>,
    /// The versions off it (its `ALT#` items), each with its parent.
    off: Vec<Message>,
    /// Replies being written (its `LIVE#` items).
    live: HashMap<MessageId, super::Progress>,
    /// Its share links (its `SHARE#` items).
    shares: Vec<crate::domain::Share>,
}

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    partitions: Mutex<HashMap<(UserId, ConversationId), Partition>>,
    usage: Mutex<HashMap<(UserId, NaiveDate), DailyUsage>>,
    /// Each user's replies in the making (under a generation cap).
    live: Mutex<HashMap<UserId, std::collections::HashSet<MessageId>>>,
    keyed: Mutex<HashMap<(UserId, String), Keyed>>,
    /// Writes of complete replies still to refuse for load (tests).
    refuse_replies: AtomicUsize,
    /// Shared copies by link id, with their conversation (the `SHARE#<id>`
    /// partitions).
    copies: Mutex<HashMap<String, (UserId, ConversationId, crate::domain::SharedConversation)>>,
}

/// An idempotency record.
struct Keyed {
    body_hash: String,
    /// `None` while running (until `lock_until`); the answer once done.
    answer: Option<(u16, String)>,
    lock_until: DateTime<Utc>,
    expires: DateTime<Utc>,
}

impl MemoryStore {
    /// The next `n` writes of a complete reply fail as DynamoDB's do when
    /// it throttles a transaction ([`StoreError::Unavailable`]).
    pub fn refuse_replies_for_load(&self, n: usize) {
        self.refuse_replies.store(n, Ordering::SeqCst);
    }

    /// Whether this complete-reply write is one to refuse.
    fn refused_for_load(&self) -> Result<(), StoreError> {
        let take = |n: usize| n.checked_sub(1);
        match self
            .refuse_replies
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
        {
            Ok(_) => Err(StoreError::Unavailable {
                context: "a reply write refused for load (test)",
                source: "ThrottlingError".into(),
            }),
            Err(_) => Ok(()),
        }
    }

    /// Counts a send on its day, and its reply among the user's live
    /// generations, unless that passes the quota's limits.
    fn count_send(&self, user: &UserId, reply: MessageId, quota: &Quota) -> Result<(), StoreError> {
        let mut live = self.live.lock().unwrap();
        let mut usage = self.usage.lock().unwrap();
        if let Some(cap) = &quota.generations {
            let running = live.entry(user.clone()).or_default();
            // Entries of sends that died are cleared once the cap refuses.
            if running.len() >= cap.max as usize {
                running.retain(|id| id.created_at().is_some_and(|at| at >= cap.stale_before));
            }
            if running.len() >= cap.max as usize {
                return Err(StoreError::Refused(Refusal::TooManyGenerations));
            }
        }
        let day = usage.entry((user.clone(), quota.day)).or_default();
        let over = |used: u64, limit: Option<u64>| limit.is_some_and(|l| used >= l);
        let held = day.tokens + day.reserved;
        if over(day.messages, quota.message_limit) || over(held, quota.token_limit) {
            return Err(StoreError::Refused(Refusal::QuotaExceeded));
        }
        day.messages += 1;
        day.reserved += quota.reserve;
        if quota.generations.is_some() {
            live.entry(user.clone()).or_default().insert(reply);
        }
        Ok(())
    }

    /// Settles `reply`, which counts `counts` tokens, as the DynamoDB
    /// store's `settled` does: its day's usage and the end of its live
    /// generation, if it was one.
    fn settle_reply(
        &self,
        user: &UserId,
        reply: MessageId,
        reserved: Option<Reservation>,
        counts: u64,
        day: NaiveDate,
    ) {
        self.settle(user, Settlement::of(reserved, counts, day));
        if reserved.is_some_and(|r| r.live) {
            if let Some(running) = self.live.lock().unwrap().get_mut(user) {
                running.remove(&reply);
            }
        }
    }

    /// Applies a reply's settlement as the DynamoDB store's ADDs do.
    fn settle(&self, user: &UserId, settlement: Settlement) {
        let mut usage = self.usage.lock().unwrap();
        let day = usage.entry((user.clone(), settlement.day)).or_default();
        let held = i64::try_from(day.tokens + day.reserved).unwrap_or(i64::MAX) + settlement.held;
        day.tokens = day.tokens.saturating_add(settlement.tokens);
        day.reserved = u64::try_from(held).unwrap_or(0).saturating_sub(day.tokens);
    }

    /// The messages stored for a conversation, oldest first (also after a delete).
    pub fn messages(&self, user: &UserId, conversation: ConversationId) -> Vec<Message> {
        let partitions = self.partitions.lock().unwrap();
        partitions
            .get(&(user.clone(), conversation))
            .map(|p| p.messages.clone())
            .unwrap_or_default()
    }

    fn with<T>(
        &self,
        user: &UserId,
        conversation: ConversationId,
        f: impl FnOnce(&mut Conversation, &mut Vec<Message>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_tree(user, conversation, |c, path, _| f(c, path))
    }

    fn with_tree<T>(
        &self,
        user: &UserId,
        conversation: ConversationId,
        f: impl FnOnce(&mut Conversation, &mut Vec<Message>, &mut Vec<Message>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut partitions = self.partitions.lock().unwrap();
        let p = partitions
            .get_mut(&(user.clone(), conversation))
            .ok_or(StoreError::Refused(Refusal::NotFound))?;
        let c = p
            .conversation
            .as_mut()
            .ok_or(StoreError::Refused(Refusal::NotFound))?;
        f(c, &mut p.messages, &mut p.off)
    }

    /// The versions off the active path, stored for a conversation.
    pub fn off_path(&self, user: &UserId, conversation: ConversationId) -> Vec<Message> {
        let partitions = self.partitions.lock().unwrap();
        partitions
            .get(&(user.clone(), conversation))
            .map(|p| p.off.clone())
            .unwrap_or_default()
    }
}

/// Whether [`move_path`] finds every message where the read saw it.
fn can_move(
    path: &[Message],
    off_path: &[Message],
    fork: Option<MessageId>,
    off: &[Message],
    on: &[Message],
) -> Result<(), StoreError> {
    let found = |list: &[Message], m: &Message| list.iter().any(|x| x.id == m.id);
    let fork_found = fork.is_none_or(|f| path.iter().any(|x| x.id == f));
    match off.iter().all(|m| found(path, m)) && on.iter().all(|m| found(off_path, m)) && fork_found
    {
        true => Ok(()),
        false => Err(StoreError::Refused(Refusal::NotFound)),
    }
}

/// The conversation claimed for `claim`'s reply, with the send's settings.
fn claimed(c: &mut Conversation, claim: &Claim, settings: &SettingsPatch) {
    c.state = ConversationState::Claimed {
        reply: claim.reply,
        until: claim.until,
    };
    c.settings = settings.applied_to(&c.settings);
}

/// Moves `off` off the path and `on` onto it as the DynamoDB store's
/// branch transaction does: each from where the read found it (else the
/// whole change is refused, nothing moved), the fork (or the conversation)
/// recording the first message that leaves.
fn move_path(
    c: &mut Conversation,
    path: &mut Vec<Message>,
    off_path: &mut Vec<Message>,
    fork: Option<MessageId>,
    off: &[Message],
    on: &[Message],
) -> Result<(), StoreError> {
    can_move(path, off_path, fork, off, on)?;
    path.retain(|x| !off.iter().any(|m| m.id == x.id));
    off_path.retain(|x| !on.iter().any(|m| m.id == x.id));
    off_path.extend(off.iter().cloned());
    path.extend(on.iter().map(|m| Message {
        parent: None,
        ..m.clone()
    }));
    path.sort_by_key(|m| m.id);
    if let Some(first) = off.first() {
        let known = match fork {
            Some(f) => {
                &mut path
                    .iter_mut()
                    .find(|x| x.id == f)
                    .expect("checked")
                    .children
            }
            None => &mut c.roots,
        };
        if !known.contains(&first.id) {
            known.push(first.id);
        }
    }
    c.message_count = (c.message_count + on.len() as u64).saturating_sub(off.len() as u64);
    Ok(())
}

/// The DynamoDB store's `ClaimedBy` guard: the conversation waits for `reply`.
fn held_by(c: &Conversation, reply: MessageId) -> Result<(), StoreError> {
    match c.state.reply() == Some(reply) {
        true => Ok(()),
        false => Err(StoreError::Refused(Refusal::ReplyPending)),
    }
}

/// The DynamoDB store's `FreeOrLapsed` guard: no reply pending, or only a
/// claim that lapsed before `at`.
fn free_or_lapsed(c: &Conversation, at: DateTime<Utc>) -> Result<(), StoreError> {
    let lapsed = matches!(c.state, ConversationState::Claimed { until, .. } if until < at);
    if c.state.reply().is_some() && !lapsed {
        return Err(StoreError::Refused(Refusal::ReplyPending));
    }
    Ok(())
}

/// `message` stored, and the conversation moved to it.
fn moved_to(c: &mut Conversation, messages: &mut Vec<Message>, message: &Message) {
    c.updated_at = message.created_at;
    c.last_message = preview(&message.content);
    c.message_count += 1;
    messages.push(message.clone());
}

/// The conversation's side of a finished reply: no longer waiting, and
/// moved to the reply when it completed.
fn conversation_after(c: &mut Conversation, outcome: &ReplyOutcome, at: DateTime<Utc>) {
    c.state = ConversationState::Free;
    if let ReplyOutcome::Complete { text, .. } = outcome {
        c.updated_at = at;
        c.last_message = preview(text);
    }
}

/// Seeding, as the DynamoDB store's own (tests only).
impl MemoryStore {
    /// Stores a new conversation with its first message.
    pub async fn create_conversation(
        &self,
        user: &UserId,
        conversation: &Conversation,
        first: &Message,
    ) -> Result<(), StoreError> {
        let mut partitions = self.partitions.lock().unwrap();
        let p = partitions
            .entry((user.clone(), conversation.id))
            .or_default();
        assert!(p.conversation.is_none(), "conversation ids are new");
        p.conversation = Some(conversation.clone());
        p.messages.push(first.clone());
        Ok(())
    }

    /// Appends a message, only while no reply is pending.
    pub async fn append_message(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
    ) -> Result<(), StoreError> {
        self.with(user, conversation, |c, messages| {
            if c.state.reply().is_some() {
                return Err(StoreError::Refused(Refusal::ReplyPending));
            }
            moved_to(c, messages, message);
            Ok(())
        })
    }
}

impl Conversations for MemoryStore {
    async fn start_conversation(
        &self,
        user: &UserId,
        conversation: &Conversation,
        first: &Message,
        quota: &Quota,
    ) -> Result<(), StoreError> {
        let reply = conversation.state.reply().unwrap_or_default();
        self.count_send(user, reply, quota)?;
        self.create_conversation(user, conversation, first).await
    }

    async fn append_and_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: &Message,
        claim: &Claim,
        quota: &Quota,
        settings: &SettingsPatch,
    ) -> Result<(), StoreError> {
        self.with(user, conversation, |c, _| {
            free_or_lapsed(c, message.created_at)
        })?;
        self.count_send(user, claim.reply, quota)?;
        self.with(user, conversation, |c, messages| {
            moved_to(c, messages, message);
            claimed(c, claim, settings);
            Ok(())
        })
    }

    async fn branch_and_claim(
        &self,
        user: &UserId,
        conversation: ConversationId,
        b: &Branching<'_>,
        claim: &Claim,
        quota: &Quota,
        settings: &SettingsPatch,
    ) -> Result<(), StoreError> {
        // One transaction in DynamoDB: nothing is counted unless all of it holds.
        self.with_tree(user, conversation, |c, path, off_path| {
            free_or_lapsed(c, b.at)?;
            can_move(path, off_path, b.fork, b.off, &[])
        })?;
        self.count_send(user, claim.reply, quota)?;
        self.with_tree(user, conversation, |c, path, off_path| {
            move_path(c, path, off_path, b.fork, b.off, &[])?;
            if let Some(message) = b.message {
                moved_to(c, path, message);
            }
            c.updated_at = b.at;
            c.last_message = preview(&b.leaf.content);
            claimed(c, claim, settings);
            Ok(())
        })
    }

    async fn switch_branch(
        &self,
        user: &UserId,
        conversation: ConversationId,
        sw: &Switch<'_>,
    ) -> Result<(), StoreError> {
        self.with_tree(user, conversation, |c, path, off_path| {
            free_or_lapsed(c, Utc::now())?;
            move_path(c, path, off_path, sw.fork, sw.off, sw.on)?;
            c.last_message = preview(&sw.leaf.content);
            Ok(())
        })
    }

    async fn update_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
        change: &ConversationChange,
    ) -> Result<Conversation, StoreError> {
        self.with(user, conversation, |c, _| {
            if let Some(title) = &change.title {
                c.title = title.clone();
            }
            c.settings = change.settings.applied_to(&c.settings);
            Ok(c.clone())
        })
    }

    async fn delete_conversation(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<Conversation, StoreError> {
        let mut partitions = self.partitions.lock().unwrap();
        partitions
            .get_mut(&(user.clone(), conversation))
            .and_then(|p| p.conversation.take())
            .ok_or(StoreError::Refused(Refusal::NotFound))
    }

    async fn purge_messages(
        &self,
        user: &UserId,
        conversation: ConversationId,
        _until: Instant,
    ) -> Result<bool, StoreError> {
        let mut partitions = self.partitions.lock().unwrap();
        if let Some(p) = partitions.get_mut(&(user.clone(), conversation)) {
            p.messages.clear();
            p.off.clear();
            p.live.clear();
            let mut copies = self.copies.lock().unwrap();
            for share in p.shares.drain(..) {
                copies.remove(share.id.as_str());
            }
        }
        Ok(true)
    }
}

impl Pages for MemoryStore {
    async fn list_conversations(
        &self,
        user: &UserId,
        page: &PageRequest,
    ) -> Result<Page<Conversation>, StoreError> {
        let partitions = self.partitions.lock().unwrap();
        let mut all: Vec<Conversation> = partitions
            .iter()
            .filter(|((owner, _), _)| owner == user)
            .filter_map(|(_, p)| p.conversation.clone())
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse((c.updated_at, c.id.to_string())));
        let skip: usize = page
            .cursor
            .as_deref()
            .map_or(Ok(0), str::parse)
            .map_err(|_| StoreError::Corrupt("unknown cursor".into()))?;
        let end = (skip + page.limit as usize).min(all.len());
        let next_cursor = (end < all.len()).then(|| end.to_string());
        Ok(Page {
            items: all[skip.min(end)..end].to_vec(),
            next_cursor,
        })
    }

    async fn conversation_page(
        &self,
        user: &UserId,
        conversation: ConversationId,
        page: &PageRequest,
    ) -> Result<(Conversation, Page<Message>), StoreError> {
        self.with(user, conversation, |c, messages| {
            let before = match &page.cursor {
                None => messages.len(),
                Some(cursor) => messages
                    .iter()
                    .position(|m| m.id.to_string() == *cursor)
                    .ok_or_else(|| StoreError::Corrupt("unknown cursor".into()))?,
            };
            let start = before.saturating_sub(page.limit as usize);
            let mut items = messages[start..before].to_vec();
            for (i, m) in items.iter_mut().enumerate() {
                // The parent is the message before on the path; versions
                // as the DynamoDB store tells them, from its record.
                let parent = (start + i).checked_sub(1).map(|p| &messages[p]);
                m.parent = parent.map(|p| p.id);
                let known = parent.map_or(&c.roots, |p| &p.children);
                m.versions = crate::domain::versions(m.id, known);
            }
            let next_cursor = (start > 0).then(|| items[0].id.to_string());
            Ok((c.clone(), Page { items, next_cursor }))
        })
    }

    async fn tree(&self, user: &UserId, conversation: ConversationId) -> Result<Tree, StoreError> {
        self.with_tree(user, conversation, |c, path, off| {
            let mut path = path.clone();
            for i in 1..path.len() {
                path[i].parent = Some(path[i - 1].id);
            }
            Ok(Tree {
                conversation: c.clone(),
                path,
                off: off.clone(),
            })
        })
    }

    async fn message(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        // On the path only, as the DynamoDB store's `MSG#` read.
        let messages = self.messages(user, conversation);
        Ok(messages.into_iter().find(|m| m.id == message))
    }
}

impl Quotas for MemoryStore {
    async fn daily_usage(&self, user: &UserId, day: NaiveDate) -> Result<DailyUsage, StoreError> {
        let usage = self.usage.lock().unwrap();
        Ok(usage.get(&(user.clone(), day)).copied().unwrap_or_default())
    }
}
