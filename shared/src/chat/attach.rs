//! Attaching to a reply: `GET /api/chat/conversations/{id}/stream`, for a
//! client whose stream dropped, a reload, or a reply that answered 202.
//!
//! Event ids count characters (`message.created` is 0, each delta the
//! reply's length after it, the last event one more), so a client's
//! `Last-Event-ID` says how much of the reply it has and the attach sends
//! the rest, from the progress its relay saved or from the stored reply.
//! A relay that is gone (it let go, or its beat is [`RELAY_GONE`] old) is
//! taken over: the attach relays from the model itself.

use chrono::Utc;
use tokio::time::{sleep, Instant};

use super::{
    streaming::{final_event, relay_name, Client, Relayed, Written, RELAY_GONE, SAVE_EVERY},
    Chat, ChatError, ChatModel, EventSink, StreamEvent,
};
use crate::{
    domain::{ConversationId, ConversationState, Message, MessageId, MessageStatus, Role, UserId},
    refusal::Refusal,
    store::{PageRequest, Relaying, Store},
};

/// The reply an attach follows, found before its stream starts.
#[derive(Debug)]
pub struct AttachedReply {
    user: UserId,
    conversation: ConversationId,
    /// The user's message the reply answers.
    user_message: Message,
    /// The reply's id (claimed: its item may not be stored yet).
    reply: MessageId,
}

/// Where a reply stands, for a follower.
enum Standing {
    /// Not stored yet: its send is submitting the job.
    Claimed,
    /// Gone: the send that claimed it failed, or the conversation was deleted.
    Gone,
    /// Stored.
    Stored(Box<Message>),
}

impl<S: Store, M: ChatModel> Chat<S, M> {
    /// The first half of an attach: the conversation's latest reply on its
    /// active path (the answer to its last message). Refused before the
    /// stream: 404 for a conversation that is not the caller's, 409
    /// `no_reply_in_progress` when its last message has no reply.
    pub async fn find_reply(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<AttachedReply, ChatError> {
        let (found, standing) = self.latest(user, conversation).await?;
        let (user_message, reply) = match (found, standing) {
            (Some(user_message), Some(reply)) => (user_message, reply),
            _ => return Err(ChatError::Refused(Refusal::NoReplyInProgress)),
        };
        Ok(AttachedReply {
            user: user.clone(),
            conversation,
            user_message,
            reply,
        })
    }

    /// The path's newest user message and the id of the reply to it, if any
    /// (stored, or claimed by a send that is submitting its job).
    async fn latest(
        &self,
        user: &UserId,
        conversation: ConversationId,
    ) -> Result<(Option<Message>, Option<MessageId>), ChatError> {
        let page = PageRequest {
            limit: 2,
            cursor: None,
        };
        let (found, messages) = self
            .store
            .conversation_page(user, conversation, &page)
            .await?;
        let mut items = messages.items.into_iter().rev();
        let (newest, before) = (items.next(), items.next());
        Ok(match (newest, found.state) {
            (Some(n), ConversationState::Claimed { reply, .. }) if n.role == Role::User => {
                (Some(n), Some(reply))
            }
            (Some(n), _) if n.role == Role::Assistant => {
                let user_message = before.filter(|b| b.role == Role::User);
                (user_message, Some(n.id))
            }
            _ => (None, None),
        })
    }

    /// The second half: streams the reply to `sink` from character `after`
    /// (`None`: from the start, `message.created` first) until its last
    /// event, the client leaves, or `deadline` comes
    /// ([`StreamEvent::Retry`]). Follows the relay writing it, or takes
    /// over when that one is gone.
    pub async fn attach(
        &self,
        attached: AttachedReply,
        after: Option<usize>,
        sink: &mut impl EventSink,
        deadline: Instant,
    ) {
        let mut client = Client {
            here: true,
            last_event: Instant::now(),
            sent: after.unwrap_or(0),
        };
        if after.is_none() {
            let created = StreamEvent::Created {
                conversation_id: attached.conversation,
                user_message: attached.user_message.clone(),
                reply_id: attached.reply,
                created_at: attached.reply.created_at().unwrap_or_else(Utc::now),
            };
            client.here = sink.send(created);
        }
        let relay = relay_name();
        while client.here {
            if Instant::now() >= deadline {
                sink.send(StreamEvent::Retry);
                return;
            }
            let reply = match self.standing(&attached).await {
                Ok(Standing::Stored(reply)) => *reply,
                Ok(Standing::Claimed) => {
                    self.pause(&mut client, sink, deadline).await;
                    continue;
                }
                Ok(Standing::Gone) => {
                    sink.send(StreamEvent::Failed(Refusal::NotFound.into()));
                    return;
                }
                Err(e) => {
                    sink.send(StreamEvent::Failed(e));
                    return;
                }
            };
            let MessageStatus::Pending { job_id } = &reply.status else {
                return self.finish(&attached, reply, &mut client, sink);
            };
            match self
                .follow(&attached, &relay, &mut client, sink, deadline)
                .await
            {
                Ok(Followed::Done) => {} // Read the final reply.
                Ok(Followed::Gone) => self.pause(&mut client, sink, deadline).await,
                Ok(Followed::Left) => return,
                Ok(Followed::Taken(saved)) => {
                    let relayed = Relayed {
                        user: &attached.user,
                        conversation: attached.conversation,
                        user_message: &attached.user_message,
                        reply: &reply,
                        relay: &relay,
                        taken_over: true,
                    };
                    let job = self.job_of(&reply, job_id);
                    let written = Written::from_saved(saved);
                    return self
                        .relay_job(&relayed, job, written, &mut client, sink, deadline)
                        .await;
                }
                Err(e) => {
                    sink.send(StreamEvent::Failed(e));
                    return;
                }
            }
        }
    }

    /// Where the attached reply stands.
    async fn standing(&self, attached: &AttachedReply) -> Result<Standing, ChatError> {
        let (user, conversation) = (&attached.user, attached.conversation);
        if let Some(reply) = self
            .store
            .message(user, conversation, attached.reply)
            .await?
        {
            return Ok(Standing::Stored(Box::new(reply)));
        }
        // Not stored: claimed still, or its send failed (the claim let go).
        match self.latest(user, conversation).await {
            Ok((_, Some(id))) if id == attached.reply => Ok(Standing::Claimed),
            Ok(_) | Err(ChatError::Refused(Refusal::NotFound)) => Ok(Standing::Gone),
            Err(e) => Err(e),
        }
    }

    /// Sends the client what it lacks of a final reply, then its last event.
    fn finish(
        &self,
        attached: &AttachedReply,
        reply: Message,
        client: &mut Client,
        sink: &mut impl EventSink,
    ) {
        if matches!(
            reply.status,
            MessageStatus::Complete | MessageStatus::Cancelled
        ) {
            let chars = reply.content.chars().count();
            client.catch_up(&reply.content, chars, sink);
        }
        if client.here {
            sink.send(final_event(
                attached.conversation,
                &attached.user_message,
                reply,
            ));
        }
    }

    /// Follows the relay writing the reply from its saved progress, until
    /// the reply is stored final (looked at every [`LOOK_EVERY`] saves'
    /// time), the relay is gone (and this call took it over), or the
    /// client leaves.
    async fn follow(
        &self,
        attached: &AttachedReply,
        relay: &str,
        client: &mut Client,
        sink: &mut impl EventSink,
        deadline: Instant,
    ) -> Result<Followed, ChatError> {
        let (user, conversation, reply) = (&attached.user, attached.conversation, attached.reply);
        let gone = chrono::Duration::from_std(RELAY_GONE).unwrap_or_default();
        let mut looks = 0u32;
        loop {
            let progress = self.store.progress(user, conversation, reply).await?;
            if let Some(p) = &progress {
                client.catch_up(&p.text, p.text.chars().count(), sink);
            }
            if !client.here {
                return Ok(Followed::Left);
            }
            let now = Utc::now();
            let stale = now - gone;
            let alive = progress
                .as_ref()
                .is_some_and(|p| !p.relay.is_empty() && p.beat > stale);
            if !alive {
                return match self
                    .store
                    .take_relay(user, conversation, reply, relay, now, stale)
                    .await?
                {
                    Relaying::Taken(saved) => Ok(Followed::Taken(saved.text)),
                    // Another attach took it first: look again.
                    Relaying::Held(_) => Ok(Followed::Gone),
                };
            }
            if Instant::now() >= deadline {
                return Ok(Followed::Gone);
            }
            // The relay stores the reply final, then ends: no save says so.
            looks += 1;
            if looks.is_multiple_of(LOOK_EVERY) {
                let stored = self.store.message(user, conversation, reply).await?;
                if !stored.is_some_and(|m| m.is_pending()) {
                    return Ok(Followed::Done);
                }
            }
            self.pause(client, sink, deadline).await;
        }
    }

    /// Waits [`SAVE_EVERY`] (the relay saves no more often), with keep-alives.
    async fn pause(&self, client: &mut Client, sink: &mut impl EventSink, deadline: Instant) {
        let pause = sleep(SAVE_EVERY.min(deadline.saturating_duration_since(Instant::now())));
        client.keep_alive_while(pause, sink).await;
    }
}

/// A follower reads the stored reply every this many progress reads
/// (about every second): the relay's last save comes before the reply is
/// final, so only the reply says it is.
const LOOK_EVERY: u32 = 4;

/// How following a relay ended.
enum Followed {
    /// The reply is final (or gone): read it.
    Done,
    /// The relay is gone and another caller took over: read the reply again.
    Gone,
    /// The client left.
    Left,
    /// This call relays now, from the saved text.
    Taken(String),
}
