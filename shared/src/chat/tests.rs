//! The use cases against the in-memory store and a scripted model, for the
//! branches that are slow or awkward over DynamoDB Local: pending replies,
//! expiry, webhook races, a model that fails after the user's message was
//! stored.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use tokio::time::Instant;

use super::*;
use crate::{
    domain::{
        Claim, Completion, ConversationId, ConversationState, Message, MessageContent, MessageId,
        MessageStatus, Role, SettingsPatch, UserId,
    },
    store::{memory::MemoryStore, prelude::*, PageRequest},
    webhook::{WebhookTarget, Webhooks},
};

/// How a scripted job stands whenever it is asked.
#[derive(Clone, Debug)]
enum Script {
    Running,
    Reply(&'static str),
    Fails,
    TimesOut,
    Forgotten,
}

mod attach;
mod branches;
mod streaming;

/// How a scripted streaming job ends once its pieces are written.
#[derive(Clone, Copy, Debug)]
enum Ending {
    Completes,
    Fails,
    /// Runs on, writing nothing more (until cancelled).
    Never,
}

/// A model whose jobs are `job-1`, `job-2`, … and stand as the test says.
#[derive(Default)]
struct ScriptedModel {
    /// The pieces and ending of the next streaming job.
    stream_next: Mutex<Option<(Vec<&'static str>, Ending)>>,
    /// Each streaming job's pieces still to write, one per look, and its ending.
    streams: Mutex<HashMap<String, (VecDeque<&'static str>, Ending)>>,
    /// What the next submitted job does.
    next: Mutex<Option<Script>>,
    /// Whether `submit` itself fails.
    refuse_submit: bool,
    /// How long `submit_streaming` takes (a `run` retrying 429s).
    submit_delay: Duration,
    /// What the job becomes right after a send's wait looked at it.
    after_wait: Mutex<Option<Script>>,
    jobs: Mutex<HashMap<String, Script>>,
    /// The history of every submitted job.
    submitted: Mutex<Vec<Vec<String>>>,
    /// Every job cancelled.
    cancelled: Mutex<Vec<String>>,
    /// What every submitted job asked, beyond its history.
    prompts: Mutex<Vec<Asked>>,
}

/// A submitted job's model, instructions and sampling.
#[derive(Clone, Debug, PartialEq)]
struct Asked {
    model: String,
    instructions: Option<String>,
    sampling: Sampling,
}

impl ScriptedModel {
    fn replying(text: &'static str) -> Self {
        Self::with(Script::Reply(text))
    }

    fn with(script: Script) -> Self {
        Self {
            next: Mutex::new(Some(script)),
            ..Self::default()
        }
    }

    /// From now on, job `id` stands as `script`.
    fn set(&self, id: &str, script: Script) {
        self.jobs.lock().unwrap().insert(id.into(), script);
    }

    fn cancelled(&self) -> Vec<String> {
        self.cancelled.lock().unwrap().clone()
    }

    fn submitted(&self) -> Vec<Vec<String>> {
        self.submitted.lock().unwrap().clone()
    }

    fn state(&self, job_id: &str) -> Result<Generation, ModelError> {
        let script = self.jobs.lock().unwrap().get(job_id).cloned();
        let failure = |e: &str| -> Box<dyn std::error::Error + Send + Sync> { e.into() };
        match script.expect("a submitted job") {
            Script::Running => Ok(Generation::Running),
            Script::Reply(text) => Ok(Generation::Done(Ok(Completion {
                text: text.into(),
                usage: None,
            }))),
            Script::Fails => Ok(Generation::Done(Err(ModelError::Failed(failure("boom"))))),
            Script::TimesOut => Ok(Generation::Done(Err(ModelError::TimedOut(failure("slow"))))),
            Script::Forgotten => Err(ModelError::UnknownJob(failure("404"))),
        }
    }
}

/// The reply limit of every scripted job, in tokens.
const SCRIPTED_MAX_TOKENS: u64 = 10;

impl ChatModel for ScriptedModel {
    /// A prompt's bound is its characters (every test text is ASCII); its
    /// estimate one token per four.
    fn token_bounds(&self, prompt: &Prompt<'_>) -> crate::domain::TokenBounds {
        let chars: u64 = prompt.history.iter().map(|m| m.content.len() as u64).sum();
        crate::domain::TokenBounds {
            most: chars + SCRIPTED_MAX_TOKENS,
            prompt: chars.div_ceil(4),
        }
    }

    async fn cancel(&self, job: JobRef<'_>, _deadline: Instant) -> Result<(), ModelError> {
        self.cancelled.lock().unwrap().push(job.id.into());
        Ok(())
    }

    async fn submit(
        &self,
        prompt: &Prompt<'_>,
        _webhook: Option<&str>,
        _deadline: Instant,
    ) -> Result<String, ModelError> {
        if self.refuse_submit {
            return Err(ModelError::Failed("refused".into()));
        }
        let mut submitted = self.submitted.lock().unwrap();
        submitted.push(prompt.history.iter().map(|m| m.content.clone()).collect());
        self.prompts.lock().unwrap().push(Asked {
            model: prompt.model.id.to_string(),
            instructions: prompt.instructions.map(str::to_owned),
            sampling: prompt.sampling,
        });
        let id = format!("job-{}", submitted.len());
        let script = self.next.lock().unwrap().clone().unwrap_or(Script::Running);
        self.jobs.lock().unwrap().insert(id.clone(), script);
        Ok(id)
    }

    async fn wait(&self, job: JobRef<'_>, _until: Instant) -> Result<Generation, ModelError> {
        let job_id = job.id;
        let state = self.state(job_id);
        if let Some(next) = self.after_wait.lock().unwrap().take() {
            self.set(job_id, next);
        }
        state
    }

    async fn poll(&self, job: JobRef<'_>, _deadline: Instant) -> Result<Generation, ModelError> {
        self.state(job.id)
    }

    async fn submit_streaming(
        &self,
        prompt: &Prompt<'_>,
        webhook: Option<&str>,
        deadline: Instant,
    ) -> Result<String, ModelError> {
        tokio::time::sleep(self.submit_delay).await;
        let id = self.submit(prompt, webhook, deadline).await?;
        let (pieces, ending) = self
            .stream_next
            .lock()
            .unwrap()
            .clone()
            .expect("a stream script");
        let script = (pieces.into_iter().collect(), ending);
        self.streams.lock().unwrap().insert(id.clone(), script);
        Ok(id)
    }

    async fn stream(&self, job: JobRef<'_>, _deadline: Instant) -> Result<StreamStep, ModelError> {
        let job_id = job.id;
        if self.cancelled().iter().any(|j| j == job_id) {
            let end = Some(StreamEnd::Cancelled);
            return Ok(StreamStep {
                end,
                ..StreamStep::default()
            });
        }
        let mut streams = self.streams.lock().unwrap();
        let Some((pieces, ending)) = streams.get_mut(job_id) else {
            // A job submitted without streaming: its whole output once
            // final, as RunPod's `stream` gives a handler that returns.
            drop(streams);
            return Ok(match self.state(job_id)? {
                Generation::Running => StreamStep::default(),
                Generation::Done(Ok(c)) => StreamStep {
                    pieces: vec![c.text],
                    end: Some(StreamEnd::Completed),
                    ..StreamStep::default()
                },
                Generation::Done(Err(e)) => StreamStep {
                    end: Some(StreamEnd::Failed(e)),
                    ..StreamStep::default()
                },
            });
        };
        if let Some(piece) = pieces.pop_front() {
            let pieces = vec![piece.to_owned()];
            return Ok(StreamStep {
                pieces,
                ..StreamStep::default()
            });
        }
        let end = match ending {
            Ending::Completes => Some(StreamEnd::Completed),
            Ending::Fails => Some(StreamEnd::Failed(ModelError::Failed("boom".into()))),
            Ending::Never => None,
        };
        Ok(StreamStep {
            end,
            ..StreamStep::default()
        })
    }
}

const LIMITS: HistoryLimits = HistoryLimits {
    max_messages: 20,
    max_chars: 24_000,
    max_reply_chars: 40,
};

fn chat(model: ScriptedModel) -> Chat<MemoryStore, ScriptedModel> {
    chat_with(model, Duration::from_secs(3600))
}

fn chat_with(model: ScriptedModel, max_age: Duration) -> Chat<MemoryStore, ScriptedModel> {
    let pending = PendingPolicy {
        max_age,
        max_checks: 5,
    };
    Chat::new(
        MemoryStore::default(),
        Webhooks::new(None, b"k", Duration::from_secs(3600)),
        LIMITS,
        pending,
    )
    .with_model(model)
}

fn unlimited() -> crate::store::Quota {
    QuotaLimits::default().at(chrono::Utc::now())
}

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

fn times() -> SendTimes {
    let soon = Instant::now() + Duration::from_secs(5);
    SendTimes {
        wait_until: soon,
        deadline: soon,
    }
}

async fn send<M: ChatModel>(
    chat: &Chat<MemoryStore, M>,
    conversation_id: Option<ConversationId>,
    text: &str,
) -> Result<SendOutcome, ChatError> {
    let request = SendRequest {
        conversation_id,
        kind: SendKind::Message(MessageContent::parse(text.into(), 1000).unwrap()),
        settings: SettingsPatch::default(),
    };
    chat.send(&alice(), request, times()).await
}

async fn read<M: ChatModel>(chat: &Chat<MemoryStore, M>, id: ConversationId) -> Vec<Message> {
    let page = first_page(50);
    let deadline = Instant::now() + Duration::from_secs(5);
    chat.get_conversation(&alice(), id, &page, deadline)
        .await
        .unwrap()
        .1
        .items
}

fn first_page(limit: u32) -> PageRequest {
    PageRequest {
        limit,
        cursor: None,
    }
}

/// The webhook target of a send's pending reply.
fn target_of(out: &SendOutcome) -> WebhookTarget {
    WebhookTarget {
        user: alice(),
        conversation: out.conversation_id,
        message: out.reply.id,
    }
}

fn statuses(messages: &[Message]) -> Vec<(Role, &str)> {
    messages
        .iter()
        .map(|m| (m.role, m.status.as_str()))
        .collect()
}

#[tokio::test]
async fn a_reply_ready_within_the_wait_is_stored_complete() {
    let chat = chat(ScriptedModel::replying("By patient."));
    let out = send(&chat, None, "How do I organize patient files?")
        .await
        .unwrap();
    assert_eq!(out.reply.status, MessageStatus::Complete);
    assert_eq!(out.reply.content, "By patient.");
    let stored = chat.store().messages(&alice(), out.conversation_id);
    assert_eq!(stored, [out.user_message, out.reply]);
    assert_eq!(
        chat.model().submitted(),
        [["How do I organize patient files?"]]
    );
}

#[tokio::test]
async fn a_continued_conversation_sends_its_complete_history_only() {
    let chat = chat(ScriptedModel::replying("ok"));
    let id = send(&chat, None, "one").await.unwrap().conversation_id;
    *chat.model().next.lock().unwrap() = Some(Script::Fails);
    assert!(send(&chat, Some(id), "two").await.is_err());
    *chat.model().next.lock().unwrap() = Some(Script::Reply("ok"));
    send(&chat, Some(id), "three").await.unwrap();
    // "two" was stored and is sent; the failed reply to it stored nothing,
    // so "two" and "three" are one user turn (roles must alternate).
    assert_eq!(chat.model().submitted()[2], ["one", "ok", "two\n\nthree"]);
}

#[tokio::test]
async fn a_failed_model_keeps_the_users_message_and_frees_the_conversation() {
    for (script, timeout) in [(Script::Fails, false), (Script::TimesOut, true)] {
        let chat = chat(ScriptedModel::with(script));
        let err = send(&chat, None, "hello").await.unwrap_err();
        let ChatError::Model(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(e.is_timeout(), timeout);
        let list = chat
            .list_conversations(&alice(), &first_page(10))
            .await
            .unwrap();
        let id = list.items[0].id;
        assert_eq!(list.items[0].state, ConversationState::Free);
        assert_eq!(
            statuses(&chat.store().messages(&alice(), id)),
            [(Role::User, "complete")]
        );
    }
}

#[tokio::test]
async fn a_refused_submission_keeps_the_users_message() {
    let chat = chat(ScriptedModel {
        refuse_submit: true,
        ..ScriptedModel::default()
    });
    let first = send(&chat, None, "hello").await.unwrap_err();
    assert!(
        matches!(first, ChatError::Model(ModelError::Failed(_))),
        "{first:?}"
    );
    assert!(chat.model().submitted().is_empty());
    let list = chat
        .list_conversations(&alice(), &first_page(10))
        .await
        .unwrap();
    assert_eq!(list.items[0].last_message, "hello");
    assert_eq!(
        list.items[0].state,
        ConversationState::Free,
        "the claim is released"
    );
}

#[tokio::test]
async fn a_running_sends_claim_refuses_other_sends_until_it_lapses() {
    let chat = chat(ScriptedModel::replying("ok"));
    let id = send(&chat, None, "one").await.unwrap().conversation_id;
    // Another send holds the conversation: its message stored, its reply not yet.
    let other = Message::new(Role::User, "two".into(), chrono::Utc::now());
    let claim = Claim {
        reply: MessageId::new(),
        until: chrono::Utc::now() + chrono::Duration::seconds(60),
    };
    chat.store()
        .append_and_claim(
            &alice(),
            id,
            &other,
            &claim,
            &unlimited(),
            &SettingsPatch::default(),
        )
        .await
        .unwrap();
    let refused = send(&chat, Some(id), "three").await.unwrap_err();
    assert!(
        matches!(refused, ChatError::Refused(Refusal::ReplyPending)),
        "{refused:?}"
    );
    assert_eq!(chat.model().submitted().len(), 1, "nothing submitted");
    assert_eq!(
        chat.store().messages(&alice(), id).len(),
        3,
        "nothing stored"
    );

    // A claim whose send died lapses: the conversation takes sends again.
    let lapsed = Claim {
        until: chrono::Utc::now() - chrono::Duration::seconds(1),
        ..claim
    };
    chat.store()
        .release_claim(&alice(), id, claim.reply, None)
        .await
        .unwrap();
    chat.store()
        .append_and_claim(
            &alice(),
            id,
            &other,
            &lapsed,
            &unlimited(),
            &SettingsPatch::default(),
        )
        .await
        .unwrap();
    let out = send(&chat, Some(id), "four").await.unwrap();
    assert_eq!(out.reply.content, "ok");
    let list = chat
        .list_conversations(&alice(), &first_page(10))
        .await
        .unwrap();
    assert_eq!(
        list.items[0].state,
        ConversationState::Free,
        "the reply ended the claim"
    );
}

#[tokio::test]
async fn a_slow_reply_is_pending_then_a_read_completes_it() {
    let chat = chat(ScriptedModel::with(Script::Running));
    let out = send(&chat, None, "hello").await.unwrap();
    assert!(out.reply.is_pending());
    assert_eq!(
        read(&chat, out.conversation_id).await[1].status.as_str(),
        "pending"
    );
    chat.model().set("job-1", Script::Reply("at last"));
    let messages = read(&chat, out.conversation_id).await;
    assert_eq!(messages[1].content, "at last");
    assert_eq!(messages[1].status, MessageStatus::Complete);
    // Stored, not only shown: the next send is accepted.
    *chat.model().next.lock().unwrap() = Some(Script::Reply("again"));
    send(&chat, Some(out.conversation_id), "next")
        .await
        .unwrap();
}

#[tokio::test]
async fn sending_while_a_reply_is_pending_is_refused_until_it_finishes() {
    let chat = chat(ScriptedModel::with(Script::Running));
    let id = send(&chat, None, "hello").await.unwrap().conversation_id;
    let err = send(&chat, Some(id), "again").await.unwrap_err();
    assert!(
        matches!(err, ChatError::Refused(Refusal::ReplyPending)),
        "{err:?}"
    );
    assert_eq!(chat.model().submitted().len(), 1);
    // The pending reply finished unnoticed: the send checks it and goes on.
    chat.model().set("job-1", Script::Reply("done"));
    *chat.model().next.lock().unwrap() = Some(Script::Reply("second"));
    let out = send(&chat, Some(id), "again").await.unwrap();
    assert_eq!(out.reply.content, "second");
    assert_eq!(chat.model().submitted()[1], ["hello", "done", "again"]);
}

#[tokio::test]
async fn a_pending_reply_that_is_too_old_or_forgotten_becomes_failed() {
    // A job still running is cancelled (issue 13); a forgotten one is gone already.
    for (script, max_age, cancelled) in [
        (Script::Running, Duration::ZERO, vec!["job-1".to_owned()]),
        (Script::Forgotten, Duration::from_secs(3600), vec![]),
    ] {
        let chat = chat_with(ScriptedModel::with(Script::Running), max_age);
        // Expired at once (max age 0), the send's own look after its
        // pending write finds it so: the send's answer is that failure.
        let sent = send(&chat, None, "hello").await;
        assert_eq!(sent.is_err(), max_age.is_zero(), "{sent:?}");
        let page = first_page(10);
        let listed = chat.list_conversations(&alice(), &page).await.unwrap();
        let id = listed.items[0].id;
        chat.model().set("job-1", script);
        let messages = read(&chat, id).await;
        assert_eq!(
            messages[1].status,
            MessageStatus::Failed {
                error: "the reply expired before it could be collected".into()
            }
        );
        assert_eq!(chat.model().cancelled(), cancelled);
    }
}

#[tokio::test]
async fn a_job_that_fails_while_pending_stores_a_safe_reason() {
    let chat = chat(ScriptedModel::with(Script::Running));
    let id = send(&chat, None, "hello").await.unwrap().conversation_id;
    chat.model().set("job-1", Script::TimesOut);
    let messages = read(&chat, id).await;
    assert_eq!(
        messages[1].status,
        MessageStatus::Failed {
            error: "the AI model did not answer in time".into()
        }
    );
}

/// RunPod's webhook call about `job_id`, saying the job ended or not.
async fn deliver(
    chat: &Chat<MemoryStore, ScriptedModel>,
    target: &WebhookTarget,
    job_id: &str,
    finished: bool,
) -> Result<WebhookResult, ChatError> {
    let delivery = JobDelivery {
        job_id: job_id.into(),
        finished,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    chat.receive_webhook(target, delivery, deadline).await
}

#[tokio::test]
async fn a_webhook_stores_what_the_model_says_once_and_a_racing_read_sees_it() {
    let chat = chat(ScriptedModel::with(Script::Running));
    let out = send(&chat, None, "hello").await.unwrap();
    let target = target_of(&out);
    let unfinished = deliver(&chat, &target, "job-1", false).await;
    assert_eq!(unfinished.unwrap(), WebhookResult::NotFinal);
    // The delivery says the job ended; the model says it runs: ignored.
    let early = deliver(&chat, &target, "job-1", true).await;
    assert_eq!(early.unwrap(), WebhookResult::NotFinal);
    assert!(read(&chat, out.conversation_id).await[1].is_pending());
    // Another job's result (someone else's, say) is not this reply's.
    chat.model().set("job-9", Script::Reply("another reply"));
    let other_job = deliver(&chat, &target, "job-9", true).await;
    assert!(matches!(
        other_job,
        Err(ChatError::Refused(Refusal::NotFound))
    ));
    chat.model().set("job-1", Script::Reply("from the model"));
    let first = deliver(&chat, &target, "job-1", true).await;
    assert_eq!(first.unwrap(), WebhookResult::Stored);
    // A repeat, and a read whose poll sees another text, change nothing.
    chat.model().set("job-1", Script::Reply("changed"));
    let repeat = deliver(&chat, &target, "job-1", true).await;
    assert_eq!(repeat.unwrap(), WebhookResult::Stored);
    let messages = read(&chat, out.conversation_id).await;
    assert_eq!(messages[1].content, "from the model");
}

#[tokio::test]
async fn a_webhook_for_a_job_the_model_forgot_is_not_found() {
    let chat = chat(ScriptedModel::with(Script::Running));
    let out = send(&chat, None, "hello").await.unwrap();
    chat.model().set("job-1", Script::Forgotten);
    let result = deliver(&chat, &target_of(&out), "job-1", true).await;
    assert!(matches!(result, Err(ChatError::Refused(Refusal::NotFound))));
}

#[tokio::test]
async fn a_read_that_loses_the_race_rereads_the_winners_reply() {
    let chat = chat(ScriptedModel::with(Script::Running));
    let out = send(&chat, None, "hello").await.unwrap();
    let page = first_page(50);
    let (_, mut stale) = chat
        .store()
        .conversation_page(&alice(), out.conversation_id, &page)
        .await
        .unwrap();
    chat.model().set("job-1", Script::Reply("winner"));
    deliver(&chat, &target_of(&out), "job-1", true)
        .await
        .unwrap();
    chat.model().set("job-1", Script::Reply("loser"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let reread = chat
        .refresh_pending(
            &alice(),
            out.conversation_id,
            &mut stale.items,
            chat.pending,
            deadline,
        )
        .await
        .unwrap();
    assert!(
        reread,
        "the read must learn that another finisher came first"
    );
    assert_eq!(read(&chat, out.conversation_id).await[1].content, "winner");
}

#[tokio::test]
async fn a_webhook_for_a_deleted_conversation_is_not_found() {
    let chat = chat(ScriptedModel::with(Script::Running));
    let out = send(&chat, None, "hello").await.unwrap();
    chat.delete_conversation(&alice(), out.conversation_id, Instant::now())
        .await
        .unwrap();
    chat.model().set("job-1", Script::Reply("late"));
    let result = deliver(&chat, &target_of(&out), "job-1", true).await;
    assert!(matches!(result, Err(ChatError::Refused(Refusal::NotFound))));
    assert!(chat
        .store()
        .messages(&alice(), out.conversation_id)
        .is_empty());
}

#[tokio::test]
async fn another_users_conversation_cannot_be_continued() {
    let chat = chat(ScriptedModel::replying("ok"));
    let id = send(&chat, None, "mine").await.unwrap().conversation_id;
    let bob = UserId::parse("bob").unwrap();
    let request = SendRequest {
        conversation_id: Some(id),
        kind: SendKind::Message(MessageContent::parse("theirs".into(), 1000).unwrap()),
        settings: SettingsPatch::default(),
    };
    let err = chat.send(&bob, request, times()).await.unwrap_err();
    assert!(
        matches!(err, ChatError::Refused(Refusal::NotFound)),
        "{err:?}"
    );
    assert_eq!(chat.model().submitted().len(), 1);
}

/// Issue 13: a reply longer than `max_reply_chars` is stored cut and
/// marked, by the send and by a later finisher alike.
#[tokio::test]
async fn a_reply_over_the_limit_is_stored_cut_and_marked_truncated() {
    let long = "Keep one folder per patient, named by the patient's number.";
    let chat = chat(ScriptedModel::replying(long));
    let out = send(&chat, None, "How?").await.unwrap();
    let kept: String = long.chars().take(40).collect();
    assert_eq!(
        (out.reply.content.as_str(), out.reply.truncated),
        (kept.as_str(), true)
    );
    let stored = read(&chat, out.conversation_id).await[1].clone();
    assert_eq!(
        (stored.parent, stored.versions.len()),
        (Some(out.user_message.id), 1)
    );
    let plain = Message {
        parent: None,
        versions: vec![],
        ..stored
    };
    assert_eq!(plain, out.reply);

    *chat.model().next.lock().unwrap() = Some(Script::Running);
    let pending = send(&chat, Some(out.conversation_id), "And?")
        .await
        .unwrap();
    chat.model().set("job-2", Script::Reply(long));
    let messages = read(&chat, pending.conversation_id).await;
    assert_eq!(messages[3].content, kept);
    assert!(messages[3].truncated);

    let short = chat_with(
        ScriptedModel::replying("By patient."),
        Duration::from_secs(60),
    );
    let reply = send(&short, None, "How?").await.unwrap().reply;
    assert_eq!(
        (reply.content.as_str(), reply.truncated),
        ("By patient.", false)
    );
}

/// Issue 13: per-user daily quotas, counted in the send's own writes.
#[tokio::test]
async fn sends_over_the_daily_message_limit_are_refused_and_store_nothing() {
    let limits = QuotaLimits {
        messages: Some(2),
        ..QuotaLimits::default()
    };
    let chat = chat(ScriptedModel::replying("ok")).with_quota(limits);
    let id = send(&chat, None, "one").await.unwrap().conversation_id;
    send(&chat, Some(id), "two").await.unwrap();
    let refused = send(&chat, Some(id), "three").await.unwrap_err();
    assert!(
        matches!(refused, ChatError::Refused(Refusal::QuotaExceeded)),
        "{refused:?}"
    );
    assert!(matches!(
        send(&chat, None, "four").await,
        Err(ChatError::Refused(Refusal::QuotaExceeded))
    ));
    assert_eq!(chat.model().submitted().len(), 2, "nothing submitted");
    assert_eq!(
        chat.store().messages(&alice(), id).len(),
        4,
        "nothing stored"
    );
    let report = chat.usage(&alice()).await.unwrap();
    assert_eq!((report.used.messages, report.limits), (2, limits));
    // "ok" twice: one token each, estimated from the reply's length.
    assert_eq!(report.used.tokens, 2);
    let bob = UserId::parse("bob").unwrap();
    assert_eq!(chat.usage(&bob).await.unwrap().used.messages, 0);
}

#[tokio::test]
async fn a_user_past_the_token_limit_is_refused_until_the_day_ends() {
    let limits = QuotaLimits {
        tokens: Some(5),
        ..QuotaLimits::default()
    };
    // 20 characters: 5 tokens by the estimate, when the worker reports none.
    let chat = chat(ScriptedModel::replying("twenty characters!!!")).with_quota(limits);
    let id = send(&chat, None, "one").await.unwrap().conversation_id;
    let refused = send(&chat, Some(id), "two").await.unwrap_err();
    assert!(
        matches!(refused, ChatError::Refused(Refusal::QuotaExceeded)),
        "{refused:?}"
    );
    assert_eq!(chat.usage(&alice()).await.unwrap().used.tokens, 5);
}

/// Issue 13: deleting a conversation whose reply is pending stops its job;
/// one whose replies are final cancels nothing.
#[tokio::test]
async fn deleting_a_conversation_cancels_its_pending_job() {
    let chat = chat(ScriptedModel::replying("done"));
    let finished = send(&chat, None, "one").await.unwrap().conversation_id;
    *chat.model().next.lock().unwrap() = Some(Script::Running);
    let pending = send(&chat, None, "two").await.unwrap().conversation_id;
    let until = Instant::now() + Duration::from_secs(5);
    chat.delete_conversation(&alice(), finished, until)
        .await
        .unwrap();
    assert!(chat.model().cancelled().is_empty());
    chat.delete_conversation(&alice(), pending, until)
        .await
        .unwrap();
    assert_eq!(chat.model().cancelled(), ["job-2"]);
}

/// A send answers with the reply or says it is pending: a job that failed
/// just after the wait (found by the look after the pending write) is the
/// send's model error, never a "pending" answer whose reply is failed.
#[tokio::test]
async fn a_job_that_fails_after_the_wait_is_the_sends_error_not_a_pending_answer() {
    let model = ScriptedModel::with(Script::Running);
    *model.after_wait.lock().unwrap() = Some(Script::Fails);
    let chat = chat(model);
    let out = send(&chat, None, "hello").await;
    assert!(matches!(out, Err(ChatError::Model(_))), "{out:?}");
}

/// DynamoDB throttling the write of a finished reply must not lose a reply
/// the GPU already paid for: it stays pending with its job, and the next
/// read stores it.
#[tokio::test]
async fn a_finished_reply_the_table_refuses_for_load_stays_pending_for_a_read_to_store() {
    let chat = chat(ScriptedModel::replying("Sorted by patient."));
    chat.store().refuse_replies_for_load(1);
    let out = send(&chat, None, "hello").await.unwrap();
    assert!(out.reply.is_pending(), "{:?}", out.reply.status);
    let messages = read(&chat, out.conversation_id).await;
    assert_eq!(messages[1].status, MessageStatus::Complete);
    assert_eq!(messages[1].content, "Sorted by patient.");
    assert!(
        chat.model().cancelled().is_empty(),
        "the paid job is not cancelled"
    );
}
