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

use crate::refusal::Refusal;
use std::{future::Future, time::Duration};

use chrono::{DateTime, Utc};
use tokio::time::{sleep, sleep_until, Instant};

use super::{
    send::{Ask, Turn},
    Chat, ChatError, ChatModel, Completion, ModelError, SendOutcome, SendRequest, SendTimes,
    StreamEnd, StreamStep,
};
use crate::{
    domain::{ConversationId, Message, MessageId, MessageStatus, ReplyOutcome, UsageSum, UserId},
    store::{FinishResult, PendingReply, Store},
};

/// Longest silence on a stream before a keep-alive, so no proxy closes it
/// while a GPU starts (the interface promises at most 15 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// The first delay between looks at a streaming job, and the one used
/// while pieces flow.
const POLL_FAST: Duration = Duration::from_millis(50);
/// The longest delay between looks, while the job is queued.
const POLL_SLOW: Duration = Duration::from_millis(1_000);

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

/// Whether the client is still there, and when it last heard from us.
struct Client {
    here: bool,
    last_event: Instant,
}

impl Client {
    /// `work`'s output, with a keep-alive every [`KEEP_ALIVE`] of silence
    /// while it runs (a `run` retrying 429s, a slow look at the job, the
    /// pause between looks) for as long as the client is there.
    async fn keep_alive_while<T>(
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
}

/// The text relayed so far and what the chunks said of tokens.
#[derive(Default)]
struct Written {
    text: String,
    /// `text`'s length in characters, kept rather than counted per piece.
    chars: usize,
    usage: UsageSum,
    /// Pieces were cut or dropped: the reply is longer than the longest kept.
    cut: bool,
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
    /// client leaves, or `deadline` comes (the stream then just ends; the
    /// reply stays pending and completes through the webhook or a read).
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
        };
        let Some(job_id) = self
            .submit_and_record(&mut streaming, &mut client, sink, deadline)
            .await
        else {
            return;
        };
        if client.here {
            self.relay_job(&streaming, &job_id, &mut client, sink, deadline)
                .await;
        }
        // Otherwise the reply is pending; the webhook or a read completes it.
    }

    /// Submits the job (keep-alives while RunPod answers) and records the
    /// reply pending with it. `None` when that failed: the client heard why.
    async fn submit_and_record(
        &self,
        streaming: &mut StreamingReply,
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
        let record = self.record_pending(user, conversation, &streaming.reply, deadline);
        if let Err(e) = client.keep_alive_while(record, sink).await {
            client.fail(sink, e);
            return None;
        }
        Some(job_id)
    }

    /// Relays the job's pieces until it ends (the last event says how), the
    /// client leaves or `deadline` comes (the reply then stays pending).
    async fn relay_job(
        &self,
        streaming: &StreamingReply,
        job_id: &str,
        client: &mut Client,
        sink: &mut impl EventSink,
        deadline: Instant,
    ) {
        let mut written = Written::default();
        let mut delay = POLL_FAST;
        while Instant::now() < deadline {
            let look = self.model.stream(streaming.ask.job(job_id), deadline);
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
            let before = written.text.len();
            if !client.here || !self.relay_pieces(step.pieces, &mut written, sink) {
                return; // The client left; the reply stays pending.
            }
            written.usage.add(step.usage);
            if let Some(end) = step.end {
                let event = self.ended(streaming, job_id, end, written).await;
                sink.send(event);
                return;
            }
            if written.text.len() > before {
                (delay, client.last_event) = (POLL_FAST, Instant::now());
            } else {
                delay = (delay * 2).min(POLL_SLOW);
            }
            let pause = sleep(delay.min(deadline.saturating_duration_since(Instant::now())));
            client.keep_alive_while(pause, sink).await;
            if !client.here {
                return;
            }
        }
    }

    /// Sends the pieces on, cut at the longest reply kept so that the
    /// deltas add up to the stored reply. `false` when the client is gone.
    fn relay_pieces(
        &self,
        pieces: Vec<String>,
        written: &mut Written,
        sink: &mut impl EventSink,
    ) -> bool {
        for piece in pieces {
            let room = self.limits.max_reply_chars - written.chars;
            let kept: String = piece.chars().take(room).collect();
            written.cut |= kept.len() < piece.len();
            if kept.is_empty() {
                continue;
            }
            written.chars += kept.chars().count();
            written.text.push_str(&kept);
            if !sink.send(StreamEvent::Delta(kept)) {
                return false;
            }
        }
        true
    }

    /// Stores how the job ended and says it as the stream's last event.
    async fn ended(
        &self,
        streaming: &StreamingReply,
        job_id: &str,
        end: StreamEnd,
        written: Written,
    ) -> StreamEvent {
        let reply = PendingReply {
            user: &streaming.user,
            conversation: streaming.conversation_id,
            message: streaming.reply.id,
            job_id,
            reserved: streaming.reply.reserved,
        };
        let (outcome, failure) = match end {
            StreamEnd::Completed => {
                let completion = Completion {
                    text: written.text.clone(),
                    usage: written.usage.total(),
                };
                let mut outcome = completion.kept(self.limits.max_reply_chars);
                if let ReplyOutcome::Complete { truncated, .. } = &mut outcome {
                    *truncated |= written.cut;
                }
                (outcome, None)
            }
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
            (Ok((FinishResult::Written, outcome)), None) => self.completed(streaming, outcome),
            // A stop (or another finisher) came first: say what is stored.
            (Ok(_), _) => self.as_stored(streaming, &written.text).await,
            (Err(e), _) => StreamEvent::Failed(e.into()),
        }
    }

    /// The last event for a complete reply this stream stored (failed
    /// instead when the store refused it).
    fn completed(&self, streaming: &StreamingReply, outcome: ReplyOutcome) -> StreamEvent {
        if let ReplyOutcome::Failed { error } = outcome {
            return StreamEvent::Failed(ChatError::Model(ModelError::Failed(error.into())));
        }
        let mut reply = streaming.reply.clone();
        reply.settle(outcome);
        StreamEvent::Completed(SendOutcome {
            conversation_id: streaming.conversation_id,
            user_message: streaming.user_message.clone(),
            reply,
        })
    }

    /// The last event for a reply another finisher ended: a stop (its
    /// content then becomes what this stream wrote), a webhook or a read.
    async fn as_stored(&self, streaming: &StreamingReply, written: &str) -> StreamEvent {
        let (user, conversation, id) = (
            &streaming.user,
            streaming.conversation_id,
            streaming.reply.id,
        );
        let stored = match self.store.message(user, conversation, id).await {
            Ok(Some(message)) => message,
            Ok(None) => return StreamEvent::Failed(ChatError::Refused(Refusal::NotFound)),
            Err(e) => return StreamEvent::Failed(e.into()),
        };
        match stored.status {
            MessageStatus::Cancelled => {
                // Counted on the day its reservation was made (today without one).
                let reserved = streaming.reply.reserved;
                let day = reserved.map_or(Utc::now().date_naive(), |r| r.day);
                let kept = self
                    .store
                    .keep_cancelled_text(user, conversation, id, written, day)
                    .await;
                let content = match kept {
                    Ok(true) => written.to_owned(),
                    _ => stored.content,
                };
                StreamEvent::Cancelled {
                    message_id: id,
                    content,
                }
            }
            MessageStatus::Complete => StreamEvent::Completed(SendOutcome {
                conversation_id: conversation,
                user_message: streaming.user_message.clone(),
                reply: stored,
            }),
            MessageStatus::Failed { error } => {
                StreamEvent::Failed(ChatError::Model(ModelError::Failed(error.into())))
            }
            MessageStatus::Pending { .. } => {
                StreamEvent::Failed(ChatError::Refused(Refusal::ReplyPending))
            }
        }
    }
}
