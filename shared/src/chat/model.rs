//! What the use cases need of a model: jobs that are submitted, then
//! waited for or polled. The RunPod implementation is in
//! [`crate::runpod`]; the use-case tests script their own.

use std::{error::Error as StdError, future::Future};

use tokio::time::Instant;

pub use crate::domain::Completion;
pub use crate::domain::TokenBounds;
use crate::{
    catalogue::{Catalogue, ModelSpec},
    domain::{Message, Usage},
};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why the model gave no reply. The cause (the RunPod error, say) is the
/// source, for the log; clients see only which kind it was.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The job timed out, or the request's deadline came first.
    #[error("the model did not answer in time")]
    TimedOut(#[source] BoxError),
    /// The model's service no longer knows the job (its result expired).
    #[error("the model's service no longer knows the job")]
    UnknownJob(#[source] BoxError),
    /// Anything else: unreachable, refused, a failed job, unusable output.
    #[error("the model failed")]
    Failed(#[source] BoxError),
}

impl ModelError {
    /// Whether the model ran out of time (504) rather than failed (502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::TimedOut(_))
    }

    /// A short, safe reason for a failed reply, shown to the user.
    pub fn reason(&self) -> &'static str {
        if self.is_timeout() {
            "the AI model did not answer in time"
        } else {
            "the AI model failed to answer"
        }
    }
}

/// Where a job stands.
#[derive(Debug)]
pub enum Generation {
    /// Queued or running.
    Running,
    /// Final: the reply, or the error the job ended with.
    Done(Result<Completion, ModelError>),
}

/// Where a waited-for job stands, or why that is not known.
pub type Waited = Result<Generation, ModelError>;

/// A job as a webhook delivery names it. Nothing else of the delivery is
/// read: anyone holding the URL could have written it, so what the job
/// produced is asked of the model's service itself.
#[derive(Debug)]
pub struct JobDelivery {
    /// The job the delivery is about; it must match the pending reply's.
    pub job_id: String,
    /// Whether the delivery says the job is over.
    pub finished: bool,
}

/// A streamed job's progress since the last look at it.
#[derive(Debug, Default)]
pub struct StreamStep {
    /// The pieces written since, in order (some may be empty).
    pub pieces: Vec<String>,
    /// The token counts they report, counted once (`UsageSum`).
    pub usage: Option<Usage>,
    /// `None` while the job runs.
    pub end: Option<StreamEnd>,
}

/// How a streamed job ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// Every piece was delivered.
    Completed,
    /// Cancelled: by the user's stop, or at the model's service.
    Cancelled,
    /// Failed or timed out.
    Failed(ModelError),
}

/// What one job asks: the catalogue's model it goes to, the instructions,
/// the sampling values and the conversation.
#[derive(Debug, Clone, Copy)]
pub struct Prompt<'a> {
    /// The model (its endpoint and input format).
    pub model: &'a ModelSpec,
    /// The system instructions, when there are any.
    pub instructions: Option<&'a str>,
    /// `sampling_params`.
    pub sampling: Sampling,
    /// Oldest first, ending with the user's new message; already within
    /// the model's budget.
    pub history: &'a [Message],
}

impl<'a> Prompt<'a> {
    /// A job for `history` as a conversation without settings asks it: the
    /// catalogue's default model, the deployment's instructions, the
    /// model's whole reply limit (the tools' and benchmarks' job).
    pub fn by_default(catalogue: &'a Catalogue, history: &'a [Message]) -> Self {
        let model = catalogue.default_model();
        Self {
            model,
            instructions: catalogue.system_prompt.as_deref(),
            sampling: Sampling {
                max_tokens: model.max_output_tokens,
                temperature: None,
                top_p: None,
            },
            history,
        }
    }
}

/// The sampling values a job carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// The reply's token limit.
    pub max_tokens: u32,
    /// When the conversation set one.
    pub temperature: Option<f64>,
    /// When the conversation set one.
    pub top_p: Option<f64>,
}

/// A submitted job: the model whose endpoint runs it, and its id there.
/// `status`, `stream` and `cancel` go to the same endpoint as `run` did.
#[derive(Debug, Clone, Copy)]
pub struct JobRef<'a> {
    /// The model the job was submitted to.
    pub model: &'a ModelSpec,
    /// The job's id at that model's endpoint.
    pub id: &'a str,
}

/// The model behind the chat.
pub trait ChatModel: Sync {
    /// What a job for `prompt` can count at most, and its prompt's
    /// estimate: what a send reserves of a daily token quota.
    fn token_bounds(&self, prompt: &Prompt<'_>) -> TokenBounds;

    /// Queues a job for `prompt` and returns its id; the model's service
    /// posts the finished job to `webhook` when one is given.
    fn submit(
        &self,
        prompt: &Prompt<'_>,
        webhook: Option<&str>,
        deadline: Instant,
    ) -> impl Future<Output = Result<String, ModelError>> + Send;

    /// Queues a job like [`ChatModel::submit`] and waits for it until
    /// `until` in the same call: its id, and where it stands (or why that
    /// could not be learnt: the job is known and may still run). The
    /// model's service answers as soon as the job ends (RunPod's
    /// `runsync`), so no poll comes late. This default submits, then waits.
    fn submit_and_wait(
        &self,
        prompt: &Prompt<'_>,
        webhook: Option<&str>,
        deadline: Instant,
        until: Instant,
    ) -> impl Future<Output = Result<(String, Waited), ModelError>> + Send {
        async move {
            let id = self.submit(prompt, webhook, deadline).await?;
            let job = JobRef {
                model: prompt.model,
                id: &id,
            };
            let waited = self.wait(job, until).await;
            Ok((id, waited))
        }
    }

    /// Polls until the job is final or `until` comes; the job keeps running
    /// in the second case.
    fn wait(
        &self,
        job: JobRef<'_>,
        until: Instant,
    ) -> impl Future<Output = Result<Generation, ModelError>> + Send;

    /// Asks once where the job stands.
    fn poll(
        &self,
        job: JobRef<'_>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Generation, ModelError>> + Send;

    /// Queues a job like [`ChatModel::submit`] whose reply is read in
    /// pieces with [`ChatModel::stream`].
    fn submit_streaming(
        &self,
        prompt: &Prompt<'_>,
        webhook: Option<&str>,
        deadline: Instant,
    ) -> impl Future<Output = Result<String, ModelError>> + Send;

    /// The pieces a streaming job wrote since the last call.
    fn stream(
        &self,
        job: JobRef<'_>,
        deadline: Instant,
    ) -> impl Future<Output = Result<StreamStep, ModelError>> + Send;

    /// Stops a job nobody will read (its conversation was deleted, its
    /// reply expired): the GPU stops billing for it. Cancelling a job that
    /// already ended is not an error.
    fn cancel(
        &self,
        job: JobRef<'_>,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), ModelError>> + Send;
}
