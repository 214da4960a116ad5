//! Branches: the writes that move messages between the active path
//! (`MSG#`) and the versions off it (`ALT#`) — a regenerate's or an
//! edit's, with the send's claim and count, and a switch's — and the read
//! of a whole conversation a switch needs.
//!
//! Every move is a Delete of one key and a Put of the other in the same
//! transaction as the conversation's guarded update, so a reader sees the
//! path before or after, never between; the use case keeps a move to
//! [`crate::domain::MAX_MOVED`] messages, which one transaction holds.

use aws_sdk_dynamodb::types::{
    builders::UpdateBuilder, AttributeValue, Delete, TransactWriteItem, Update,
};

use super::{
    backend,
    items::{attr, is_conversation, keyed_under, s, Clauses, ConversationItem, MessageItem},
    messages::{claimed_by, with_settings, Actions, Guard, CLAIMED},
    DynamoStore,
};
use crate::{
    domain::{format_timestamp, preview, Claim, ConversationId, Message, MessageId, UserId},
    store::{keys, Branching, Quota, StoreError, Switch, Tree},
};

/// What a branch change makes of its conversation item beyond the guard.
struct PathChange<'a> {
    fork: Option<MessageId>,
    first_off: Option<MessageId>,
    /// Messages the path gains less those it loses.
    delta: i64,
    leaf: &'a Message,
    /// `updated_at`; `None` keeps it (a switch is not a new message).
    at: Option<chrono::DateTime<chrono::Utc>>,
}

impl PathChange<'_> {
    /// The update of the conversation item, into `clauses` and `update`.
    fn apply(
        &self,
        conversation: ConversationId,
        clauses: &mut Clauses,
        update: UpdateBuilder,
    ) -> UpdateBuilder {
        clauses.set.push("last_message = :preview".into());
        let sign = if self.delta < 0 { '-' } else { '+' };
        clauses
            .set
            .push(format!("message_count = message_count {sign} :delta"));
        let mut update = update
            .expression_attribute_values(":preview", s(preview(&self.leaf.content)))
            .expression_attribute_values(":delta", AttributeValue::N(self.delta.abs().to_string()));
        if let Some(at) = self.at {
            clauses.set.push("updated_at = :at, #gsk = :gsk".into());
            update = update
                .expression_attribute_names("#gsk", keys::GSI1SK)
                .expression_attribute_values(":at", s(format_timestamp(at)))
                .expression_attribute_values(":gsk", s(keys::updated_sk(at, conversation)));
        }
        if let (None, Some(first)) = (self.fork, self.first_off) {
            // A first message leaves the path: the conversation keeps it
            // among the first message's versions.
            clauses.add.push("#roots :first_off".into());
            update = update
                .expression_attribute_names("#roots", attr::ROOTS)
                .expression_attribute_values(
                    ":first_off",
                    AttributeValue::Ss(vec![first.to_string()]),
                );
        }
        update
    }
}

impl DynamoStore {
    /// The Deletes and Puts that move `off` off the path and `on` onto it,
    /// and the fork's record of the first message leaving.
    fn moves(
        &self,
        user: &UserId,
        conversation: ConversationId,
        fork: Option<MessageId>,
        off: &[Message],
        on: &[Message],
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let pk = keys::conversation_pk(user, conversation);
        let mut writes = vec![];
        for (messages, on_path) in [(off, false), (on, true)] {
            for m in messages {
                let from = if on_path {
                    keys::off_path_sk(m.id)
                } else {
                    keys::message_sk(m.id)
                };
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .key(keys::PK, s(&pk))
                    .key(keys::SK, s(from))
                    // The version is where the read found it.
                    .condition_expression("attribute_exists(#pk)")
                    .expression_attribute_names("#pk", keys::PK)
                    .build()
                    .map_err(backend("building a Delete"))?;
                writes.push(TransactWriteItem::builder().delete(delete).build());
                writes.push(self.put_new(MessageItem::moved(user, conversation, m, on_path)?)?);
            }
        }
        if let (Some(fork), Some(first)) = (fork, off.first()) {
            let update = Update::builder()
                .table_name(&self.table)
                .key(keys::PK, s(&pk))
                .key(keys::SK, s(keys::message_sk(fork)))
                .condition_expression("attribute_exists(#pk)")
                .update_expression("ADD #children :first_off")
                .expression_attribute_names("#pk", keys::PK)
                .expression_attribute_names("#children", attr::CHILDREN)
                .expression_attribute_values(
                    ":first_off",
                    AttributeValue::Ss(vec![first.id.to_string()]),
                )
                .build()
                .map_err(backend("building an Update"))?;
            writes.push(TransactWriteItem::builder().update(update).build());
        }
        Ok(writes)
    }

    /// A regenerate's or an edit's write (see [`crate::store::Conversations::branch_and_claim`]).
    pub(super) async fn branch(
        &self,
        user: &UserId,
        conversation: ConversationId,
        b: &Branching<'_>,
        claim: &Claim,
        quota: &Quota,
        settings: &crate::domain::SettingsPatch,
    ) -> Result<(), StoreError> {
        let mut writes = self.moves(user, conversation, b.fork, b.off, &[])?;
        if let Some(message) = b.message {
            writes.push(self.put_new(MessageItem::of(user, conversation, message)?)?);
        }
        let mut admitted = vec![self.count_send(user, quota)?];
        let mut cap = None;
        if let Some(limit) = &quota.generations {
            admitted.push(self.begin_generation(user, claim.reply, limit)?);
            cap = Some(limit);
        }
        let change = PathChange {
            fork: b.fork,
            first_off: b.off.first().map(|m| m.id),
            delta: i64::from(b.message.is_some()) - b.off.len() as i64,
            leaf: b.leaf,
            at: Some(b.at),
        };
        let actions = Actions {
            more: admitted,
            cap,
        };
        let guard = Guard::FreeOrLapsed(b.at);
        self.guarded_write(user, conversation, guard, writes, actions, |update| {
            let mut clauses = Clauses::setting(&[CLAIMED]);
            let update = change.apply(conversation, &mut clauses, claimed_by(update, claim));
            with_settings(update, clauses, settings)
        })
        .await
    }

    /// A switch's write (see [`crate::store::Conversations::switch_branch`]).
    pub(super) async fn switch(
        &self,
        user: &UserId,
        conversation: ConversationId,
        sw: &Switch<'_>,
    ) -> Result<(), StoreError> {
        let writes = self.moves(user, conversation, sw.fork, sw.off, sw.on)?;
        let change = PathChange {
            fork: sw.fork,
            first_off: sw.off.first().map(|m| m.id),
            delta: sw.on.len() as i64 - sw.off.len() as i64,
            leaf: sw.leaf,
            at: None,
        };
        let actions = Actions {
            more: vec![],
            cap: None,
        };
        let guard = Guard::FreeOrLapsed(chrono::Utc::now());
        self.guarded_write(user, conversation, guard, writes, actions, |update| {
            let mut clauses = Clauses::default();
            let update = change.apply(conversation, &mut clauses, update);
            update.update_expression(clauses.expression())
        })
        .await
    }

    /// Every item of the conversation's partition, in key order: the
    /// versions off the path (`ALT#`), the path (`MSG#`), the conversation.
    pub(super) async fn read_tree(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<Tree, StoreError> {
        let pk = keys::conversation_pk(user, conversation);
        let (mut path, mut off, mut found) = (vec![], vec![], None);
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", keys::PK)
                .expression_attribute_values(":pk", s(&pk))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(backend("Query a whole conversation"))?;
            for item in out.items.unwrap_or_default() {
                if is_conversation(&item) {
                    found = Some(ConversationItem::read(item)?);
                    continue;
                }
                if keyed_under(&item, keys::LIVE_SK_PREFIX)
                    || keyed_under(&item, keys::SHARE_SK_PREFIX)
                {
                    continue; // A reply's progress, or a share link: not a message.
                }
                let on_path = keyed_under(&item, keys::MESSAGE_SK_PREFIX);
                let m = MessageItem::read(item)?;
                if on_path {
                    path.push(m);
                } else {
                    off.push(m);
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        let conversation = found.ok_or(StoreError::Refused(crate::refusal::Refusal::NotFound))?;
        for i in 1..path.len() {
            path[i].parent = Some(path[i - 1].id);
        }
        Ok(Tree {
            conversation,
            path,
            off,
        })
    }
}
