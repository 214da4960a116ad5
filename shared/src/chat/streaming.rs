//! A send whose reply is relayed piece by piece as the model writes it.
//!
//! The first event goes out as soon as the user's message is stored, before
//! the job is submitted: RunPod's `run` may answer 429 for a while, and a
//! proxy in front (CloudFront cuts an origin silent for 30 s) must see the
//! stream start. Keep-alives then go out while the submission and every
//! look at the job are in flight. The reply is stored `pending` with its
//! job right after the submission, so a stream that breaks (the client
//! leaves, the function times out) loses nothing: the webhook or the next
//! read completes it, as after a 202.
//!
//! While it relays, the stream saves the text written so far (at most every
//! [`SAVE_EVERY`] while text flows, a beat every [`BEAT_EVERY`] while none
//! does, and all of it when it lets go), so a client that reconnects to any
//! instance can attach to the reply (`attach`), and an attach finding the
//! relay gone takes it over. Its last event comes after the reply is
//! stored final, which is what attached clients then read. A short reply
//! (done within [`SAVE_EVERY`]) saves nothing: no write is added to it.

use crate::refusal::Refusal;
use std::{future::Future, time::Duration};

use chrono::{DateTime, Utc};
use tokio::time::{sleep, sleep_until, Instant};

use super::{
    send::{Ask, Turn},
    Chat, ChatError, ChatModel, Completion, Generation, JobRef, ModelError, SendOutcome,
    SendRequest, SendTimes, StreamEnd, StreamStep,
};
use crate::{
    domain::{ConversationId, Message, MessageId, MessageStatus, ReplyOutcome, UsageSum, UserId},
    store::{FinishResult, PendingReply, Progress, Store},
};

/// Longest silence on a stream before a keep-alive, so no proxy closes it
/// while a GPU starts (the interface promises at most 15 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// The first delay between looks at a streaming job, and the one used
/// while pieces flow.
const POLL_FAST: Duration = Duration::from_millis(50);
/// The longest delay between looks, while the job is queued.
const POLL_SLOW: Duration = Duration::from_millis(1_000);
/// Shortest time between two saves of a reply's text while it flows.
pub(super) const SAVE_EVERY: Duration = Duration::from_millis(250);
/// Longest time between two beats of a live relay.
const BEAT_EVERY: Duration = Duration::from_secs(3);
/// A relay silent this long is gone: an attach takes over.
pub(super) const RELAY_GONE: Duration = Duration::from_secs(10);
/// What a stream that reaches its deadline tells the client to wait before
/// it reconnects (SSE `retry:`).
pub const RECONNECT_AFTER: Duration = Duration::from_millis(1_000);

/// What a streamed send tells its client, in order: `Created`, any number
/// of `Delta`s and `KeepAlive`s, then at most one of the last three.
#[derive(Debug)]
pub enum StreamEvent {
    /// The user's message is stored; the reply's job is being submitted.
    Created {
        /// The conversation, new or continued.
        conversation_id: ConversationId,
        /// The user's message as stored.
        user_message: Message,
        /// The reply's id, claimed in the conversation.
        reply_id: MessageId,
        /// When the reply was begun.
        created_at: DateTime<Utc>,
    },
    /// The next piece of the reply.
    Delta(String),
    /// Nothing new for a while.
    KeepAlive,
    /// The whole reply, stored complete.
    Completed(SendOutcome),
    /// The model failed; the reply is stored failed, the user's message kept.
    Failed(ChatError),
    /// The user stopped the reply; `content` is what was written before.
    Cancelled {
        /// The reply.
        message_id: MessageId,
        /// What it says.
        content: String,
    },
    /// The stream ends before the reply does (its function's time is up,
    /// or another instance relays it now): reconnect and attach.
    Retry,
}

/// Where the events go. `false` when the client is gone.
pub trait EventSink: Send {
    /// Delivers one event.
    fn send(&mut self, event: StreamEvent) -> bool;
}

/// A streamed send once the user's message is stored and the conversation
/// claimed for the reply; its job is not submitted yet.
#[derive(Debug)]
pub struct StreamingReply {
    /// The owner.
    pub user: UserId,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The user's message as stored.
    pub user_message: Message,
    /// The reply, pending once its job is submitted (its job id empty until then).
    pub reply: Message,
    /// What goes to the model.
    ask: Ask,
}

/// Whether the client is still there, when it last heard from us, and
/// how many characters of the reply it has.
pub(super) struct Client {
    pub(super) here: bool,
    pub(super) last_event: Instant,
    pub(super) sent: usize,
}

impl Client {
    /// `work`'s output, with a keep-alive every [`KEEP_ALIVE`] of silence
    /// while it runs (a `run` retrying 429s, a slow look at the job, the
    /// pause between looks) for as long as the client is there.
    pub(super) async fn keep_alive_while<T>(
        &mut self,
        work: impl Future<Output = T>,
        sink: &mut impl EventSink,
    ) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = sleep_until(self.last_event + KEEP_ALIVE), if self.here => {
                    self.here = sink.send(StreamEvent::KeepAlive);
                    self.last_event = Instant::now();
                }
            }
        }
    }

    /// Ends the stream with `error`, if the client is still there to hear it.
    fn fail(&self, sink: &mut impl EventSink, error: ChatError) {
        if self.here {
            sink.send(StreamEvent::Failed(error));
        }
    }

    /// Sends what the client lacks of `text` (`chars` characters long).
    pub(super) fn catch_up(&mut self, text: &str, chars: usize, sink: &mut impl EventSink) {
        if self.here && chars > self.sent {
            let delta: String = text.chars().skip(self.sent).collect();
            self.sent = chars;
            self.here = sink.send(StreamEvent::Delta(delta));
            self.last_event = Instant::now();
        }
    }
}

/// The text relayed so far and what the chunks said of tokens.
#[derive(Default)]
pub(super) struct Written {
    pub(super) text: String,
    /// `text`'s length in characters, kept rather than counted per piece.
    pub(super) chars: usize,
    usage: UsageSum,
    /// Pieces were cut or dropped: the reply is longer than the longest kept.
    cut: bool,
}

impl Written {
    /// A relay's start from the text an earlier relay saved.
    pub(super) fn from_saved(text: String) -> Self {
        let chars = text.chars().count();
        Self {
            text,
            chars,
            ..Self::default()
        }
    }
}

/// The reply a relay writes, however the relay began (a send, or an
/// attach that took it over).
pub(super) struct Relayed<'a> {
    pub(super) user: &'a UserId,
    pub(super) conversation: ConversationId,
    /// The user's message it answers.
    pub(super) user_message: &'a Message,
    /// The reply, pending.
    pub(super) reply: &'a Message,
    /// This relay's name in the reply's progress.
    pub(super) relay: &'a str,
    /// Taken over from a relay that is gone: the pieces it read but never
    /// saved are lost to the stream, so the stored reply is the job's whole
    /// output (one `status` call), not the text relayed.
    pub(super) taken_over: bool,
}

/// When a relay last saved its progress, and how much.
pub(super) struct Saves {
    chars: usize,
    at: Instant,
}

impl Saves {
    pub(super) fn new(chars: usize) -> Self {
        Self {
            chars,
            at: Instant::now(),
        }
    }
}

/// A fresh name for a relay.
pub(super) fn relay_name() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl<S: Store, M: ChatModel> Chat<S, M> {
    /// The first half of a streamed send: the user's message stored with
    /// the conversation claimed for the reply. Everything that can refuse
    /// the send before it is stored happens here, before any event; what
    /// can fail after (the submission) is the stream's `error` event.
    pub async fn start_streaming(
        &self,
        user: &UserId,
        request: SendRequest,
        times: SendTimes,
    ) -> Result<StreamingReply, ChatError> {
        let Turn {
            conversation_id,
            ask,
            user_message,
            reply_id,
            reserved,
        } = self.begin(user, request, times).await?;
        Ok(StreamingReply {
            user: user.clone(),
            conversation_id,
            user_message,
            reply: ask.pending_reply(reply_id, String::new(), Some(reserved)),
            ask,
        })
    }

    /// The second half: says the message is stored, submits the job and
    /// records the reply pending (whether or not the client stays: the
    /// question is stored and deserves its reply), then relays the job's
    /// pieces to `sink` until the job ends (the last event says how), the
    /// client leaves, or `deadline` comes (the stream then ends with
    /// [`StreamEvent::Retry`]; the reply stays pending, and an attach, the
    /// webhook or a read completes it).
    pub async fn relay(
        &self,
        mut streaming: StreamingReply,
        sink: &mut impl EventSink,
        deadline: Instant,
    ) {
        let created = StreamEvent::Created {
            conversation_id: streaming.conversation_id,
            user_message: streaming.user_message.clone(),
            reply_id: streaming.reply.id,
            created_at: streaming.reply.created_at,
        };
        let mut client = Client {
            here: sink.send(created),
            last_event: Instant::now(),
            sent: 0,
        };
        let relay = relay_name();
        let Some(job_id) = self
            .submit_and_record(&mut streaming, &relay, &mut client, sink, deadline)
            .await
        else {
            return;
        };
        let relayed = Relayed {
            user: &streaming.user,
            conversation: streaming.conversation_id,
            user_message: &streaming.user_message,
            reply: &streaming.reply,
            relay: &relay,
            taken_over: false,
        };
        if client.here {
            let job = streaming.ask.job(&job_id);
            self.relay_job(
                &relayed,
                job,
                Written::default(),
                &mut client,
                sink,
                deadline,
            )
            .await;
        } else {
            // The reply is pending; an attach, the webhook or a read completes it.
            self.let_go(&relayed, &Written::default()).await;
        }
    }

    /// Submits the job (keep-alives while RunPod answers) and records the
    /// reply pending with it, and this relay as the one writing it. `None`
    /// when that failed: the client heard why.
    async fn submit_and_record(
        &self,
        streaming: &mut StreamingReply,
        relay: &str,
        client: &mut Client,
        sink: &mut impl EventSink,
        deadline: Instant,
    ) -> Option<String> {
        let (user, conversation) = (&streaming.user, streaming.conversation_id);
        let webhook = self
            .webhooks
            .url_for(user, conversation, streaming.reply.id);
        let prompt = streaming.ask.prompt();
        let submit = self
            .model
            .submit_streaming(&prompt, webhook.as_deref(), deadline);
        let submitted = client.keep_alive_while(submit, sink).await;
        let (reply_id, reserved) = (streaming.reply.id, streaming.reply.reserved);
        let job_id = match self
            .job_or_released(user, conversation, reply_id, reserved, submitted)
            .await
        {
            Ok(job_id) => job_id,
            Err(e) => {
                client.fail(sink, e);
                return None;
            }
        };
        streaming.reply.status = MessageStatus::Pending {
            job_id: job_id.clone(),
        };
        // Recorded with this relay as the one writing it: an attach that
        // found no relay would take it over, and two relays would split
        // the job's stream between them.
        let reply = &streaming.reply;
        let record = self.record_pending(user, conversation, reply, Some(relay), deadline);
        if let Err(e) = client.keep_alive_while(record, sink).await {
            client.fail(sink, e);
            return None;
        }
        Some(job_id)
    }

    /// Saves the text relayed so far as the reply's progress, with `next`
    /// as its relay (empty: it lets go); `false` when another relay took it
    /// over. A failure is logged (an attach then waits for the next save,
    /// or takes over once the beat is old).
    async fn save(&self, relayed: &Relayed<'_>, written: &Written, next: &str) -> bool {
        let progress = Progress {
            text: written.text.clone(),
            relay: next.to_owned(),
            beat: Utc::now(),
        };
        let (user, conversation, reply) = (relayed.user, relayed.conversation, relayed.reply.id);
        match self
            .store
            .save_progress(user, conversation, reply, relayed.relay, &progress)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "could not save the reply's progress");
                true
            }
        }
    }

    /// Saves the text relayed so far when it grew and the last save is
    /// [`SAVE_EVERY`] old, or a beat when [`BEAT_EVERY`] passed; `false`
    /// when another relay took the reply over.
    async fn save_if_due(
        &self,
        relayed: &Relayed<'_>,
        written: &Written,
        saves: &mut Saves,
    ) -> bool {
        let since = saves.at.elapsed();
        let grew = written.chars > saves.chars;
        if !(grew && since >= SAVE_EVERY || since >= BEAT_EVERY) {
            return true;
        }
        *saves = Saves::new(written.chars);
        self.save(relayed, written, relayed.relay).await
    }

    /// Relays the job's pieces until it ends (the last event says how), the
    /// client leaves, `deadline` comes or another relay takes over (the
    /// reply then stays pending and the relay lets go: an attach takes it).
    pub(super) async fn relay_job(
        &self,
        relayed: &Relayed<'_>,
        job: JobRef<'_>,
        mut written: Written,
        client: &mut Client,
        sink: &mut impl EventSink,
        deadline: Instant,
    ) {
        let job_id = job.id;
        let mut saves = Saves::new(written.chars);
        let mut delay = POLL_FAST;
        client.catch_up(&written.text, written.chars, sink);
        loop {
            if Instant::now() >= deadline {
                self.let_go(relayed, &written).await;
                sink.send(StreamEvent::Retry);
                return;
            }
            let look = self.model.stream(job, deadline);
            let step = match client.keep_alive_while(look, sink).await {
                Ok(step) => step,
                Err(ModelError::UnknownJob(e)) => StreamStep {
                    end: Some(StreamEnd::Failed(ModelError::UnknownJob(e))),
                    ..StreamStep::default()
                },
                Err(e) => {
                    tracing::warn!(job_id, error = %e, "could not read the stream; trying again");
                    StreamStep::default()
                }
            };
            let before = written.chars;
            self.relay_pieces(step.pieces, &mut written, client, sink);
            written.usage.add(step.usage);
            if let Some(end) = step.end {
                let event = self.ended(relayed, job, end, written).await;
                sink.send(event);
                return;
            }
            if !client.here {
                self.let_go(relayed, &written).await;
                return; // The client left; the reply stays pending.
            }
            if !self.save_if_due(relayed, &written, &mut saves).await {
                // Another relay took over (this one was silent too long):
                // its client reconnects and follows that one.
                sink.send(StreamEvent::Retry);
                return;
            }
            if written.chars > before {
                delay = POLL_FAST;
            } else {
                delay = (delay * 2).min(POLL_SLOW);
            }
            let pause = sleep(delay.min(deadline.saturating_duration_since(Instant::now())));
            client.keep_alive_while(pause, sink).await;
            if !client.here {
                self.let_go(relayed, &written).await;
                return;
            }
        }
    }

    /// Saves everything relayed and lets the reply go, for an attach to
    /// take it over at once.
    async fn let_go(&self, relayed: &Relayed<'_>, written: &Written) {
        self.save(relayed, written, "").await;
    }

    /// Adds the pieces to the text, cut at the longest reply kept so that
    /// the deltas add up to the stored reply, and sends the client what it
    /// lacks (each piece as its delta while it is up to date).
    fn relay_pieces(
        &self,
        pieces: Vec<String>,
        written: &mut Written,
        client: &mut Client,
        sink: &mut impl EventSink,
    ) {
        for piece in pieces {
            let room = self.limits.max_reply_chars - written.chars;
            let kept: String = piece.chars().take(room).collect();
            written.cut |= kept.len() < piece.len();
            if kept.is_empty() {
                continue;
            }
            let up_to_date = client.sent == written.chars;
            written.chars += kept.chars().count();
            written.text.push_str(&kept);
            if !client.here {
                continue;
            }
            if up_to_date {
                client.sent = written.chars;
                client.here = sink.send(StreamEvent::Delta(kept));
                client.last_event = Instant::now();
            } else {
                client.catch_up(&written.text, written.chars, sink);
            }
        }
    }

    /// Stores how the job ended and says it as the stream's last event
    /// (attached clients find the reply final where it is stored).
    async fn ended(
        &self,
        relayed: &Relayed<'_>,
        job: JobRef<'_>,
        end: StreamEnd,
        written: Written,
    ) -> StreamEvent {
        let event = self.store_end(relayed, job, end, &written).await;
        if let StreamEvent::Failed(ChatError::Store(_)) = event {
            // Not stored: the reply is still pending. Let go, so an attach
            // takes it over (or the webhook or a read completes it).
            self.let_go(relayed, &written).await;
        }
        event
    }

    /// Stores how the job ended; the event that says it.
    async fn store_end(
        &self,
        relayed: &Relayed<'_>,
        job: JobRef<'_>,
        end: StreamEnd,
        written: &Written,
    ) -> StreamEvent {
        let job_id = job.id;
        let reply = PendingReply {
            user: relayed.user,
            conversation: relayed.conversation,
            message: relayed.reply.id,
            job_id,
            reserved: relayed.reply.reserved,
        };
        let (outcome, failure) = match end {
            StreamEnd::Completed if relayed.taken_over => {
                // Pieces the gone relay read but never saved are only in
                // the job's whole output (the worker's aggregate).
                match self.model.poll(job, Instant::now() + SAVE_EVERY * 40).await {
                    Ok(Generation::Done(result)) => (self.final_outcome(result, job_id), None),
                    _ => (self.relayed_outcome(written), None),
                }
            }
            StreamEnd::Completed => (self.relayed_outcome(written), None),
            StreamEnd::Failed(e) => {
                tracing::warn!(job_id, error = %e, "the streamed job failed");
                let error = e.reason().into();
                (ReplyOutcome::Failed { error }, Some(e))
            }
            // Not by a stop (that stores the reply cancelled first): at the
            // model's service. Nobody asked for it, so it failed.
            StreamEnd::Cancelled => {
                let e = ModelError::Failed("the job was cancelled at the model's service".into());
                let error = e.reason().into();
                (ReplyOutcome::Failed { error }, Some(e))
            }
        };
        match (self.store_outcome(reply, outcome).await, failure) {
            (Ok((FinishResult::Written, _)), Some(e)) => StreamEvent::Failed(e.into()),
            (Ok((FinishResult::Written, outcome)), None) => self.completed(relayed, outcome),
            // A stop (or another finisher) came first: say what is stored.
            (Ok(_), _) => self.as_stored(relayed, &written.text).await,
            (Err(e), _) => StreamEvent::Failed(e.into()),
        }
    }

    /// The outcome of a job whose every piece this relay read.
    fn relayed_outcome(&self, written: &Written) -> ReplyOutcome {
        let completion = Completion {
            text: written.text.clone(),
            usage: written.usage.total(),
        };
        let mut outcome = completion.kept(self.limits.max_reply_chars);
        if let ReplyOutcome::Complete { truncated, .. } = &mut outcome {
            *truncated |= written.cut;
        }
        outcome
    }

    /// The last event for a complete reply this stream stored (failed
    /// instead when the store refused it).
    fn completed(&self, relayed: &Relayed<'_>, outcome: ReplyOutcome) -> StreamEvent {
        if let ReplyOutcome::Failed { error } = outcome {
            return StreamEvent::Failed(ChatError::Model(ModelError::Failed(error.into())));
        }
        let mut reply = relayed.reply.clone();
        reply.settle(outcome);
        StreamEvent::Completed(SendOutcome {
            conversation_id: relayed.conversation,
            user_message: relayed.user_message.clone(),
            reply,
        })
    }

    /// The last event for a reply another finisher ended: a stop (its
    /// content then becomes what this stream wrote), a webhook or a read.
    async fn as_stored(&self, relayed: &Relayed<'_>, written: &str) -> StreamEvent {
        let (user, conversation, id) = (relayed.user, relayed.conversation, relayed.reply.id);
        let stored = match self.store.message(user, conversation, id).await {
            Ok(Some(message)) => message,
            Ok(None) => return StreamEvent::Failed(ChatError::Refused(Refusal::NotFound)),
            Err(e) => return StreamEvent::Failed(e.into()),
        };
        if let MessageStatus::Cancelled = stored.status {
            // Counted on the day its reservation was made (today without one).
            let reserved = relayed.reply.reserved;
            let day = reserved.map_or(Utc::now().date_naive(), |r| r.day);
            let kept = self
                .store
                .keep_cancelled_text(user, conversation, id, written, day)
                .await;
            let content = match kept {
                Ok(true) => written.to_owned(),
                _ => stored.content,
            };
            return StreamEvent::Cancelled {
                message_id: id,
                content,
            };
        }
        final_event(conversation, relayed.user_message, stored)
    }
}

/// The last event of a stream about `reply` as it is stored.
pub(super) fn final_event(
    conversation: ConversationId,
    user_message: &Message,
    reply: Message,
) -> StreamEvent {
    match reply.status {
        MessageStatus::Cancelled => StreamEvent::Cancelled {
            message_id: reply.id,
            content: reply.content,
        },
        MessageStatus::Complete => StreamEvent::Completed(SendOutcome {
            conversation_id: conversation,
            user_message: user_message.clone(),
            reply,
        }),
        MessageStatus::Failed { error } => {
            StreamEvent::Failed(ChatError::Model(ModelError::Failed(error.into())))
        }
        MessageStatus::Pending { .. } => {
            StreamEvent::Failed(ChatError::Refused(Refusal::ReplyPending))
        }
    }
}
