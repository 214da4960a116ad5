//! The RunPod client as the chat's model: its calls, with RunPod's errors
//! sorted into the kinds the use cases act on.

use tokio::time::Instant;

use super::{
    build_input, Job, JobPoll, JobState, RunPodClient, RunPodError, StreamEnd as RunPodEnd,
};
use crate::{
    chat::{
        ChatModel, Generation, JobDelivery, JobRef, ModelError, Prompt, StreamEnd, StreamStep,
        Waited,
    },
    domain::TokenBounds,
};

impl From<RunPodError> for ModelError {
    fn from(e: RunPodError) -> Self {
        match e {
            RunPodError::Deadline { .. } | RunPodError::JobTimedOut { .. } => {
                ModelError::TimedOut(Box::new(e))
            }
            // RunPod forgets a job's result a while after it finished.
            RunPodError::Status { status: 404, .. } => ModelError::UnknownJob(Box::new(e)),
            other => ModelError::Failed(Box::new(other)),
        }
    }
}

impl From<JobPoll> for Generation {
    fn from(poll: JobPoll) -> Self {
        match poll {
            JobPoll::Running => Generation::Running,
            JobPoll::Done(result) => Generation::Done(result.map_err(ModelError::from)),
        }
    }
}

/// A webhook delivery's body is the job as `status` would describe it; only
/// its id and status are read.
impl TryFrom<Job> for JobDelivery {
    type Error = RunPodError;

    fn try_from(job: Job) -> Result<Self, RunPodError> {
        let finished = !matches!(job.state()?, JobState::Queued | JobState::Running);
        let job_id = job.id()?.to_owned();
        Ok(Self { job_id, finished })
    }
}

impl ChatModel for RunPodClient {
    fn token_bounds(&self, prompt: &Prompt<'_>) -> TokenBounds {
        super::input::token_bounds(prompt)
    }

    async fn submit(
        &self,
        prompt: &Prompt<'_>,
        webhook: Option<&str>,
        deadline: Instant,
    ) -> Result<String, ModelError> {
        let input = build_input(prompt);
        let endpoint = &prompt.model.endpoint_id;
        Ok(RunPodClient::submit(self, endpoint, input, webhook, deadline).await?)
    }

    /// `runsync`: the job's result comes back in the call that queued it,
    /// as soon as the job ends ([`RunPodClient::submit_and_wait`]).
    async fn submit_and_wait(
        &self,
        prompt: &Prompt<'_>,
        webhook: Option<&str>,
        deadline: Instant,
        until: Instant,
    ) -> Result<(String, Waited), ModelError> {
        let input = build_input(prompt);
        let endpoint = &prompt.model.endpoint_id;
        let (id, poll) =
            RunPodClient::submit_and_wait(self, endpoint, input, webhook, until, deadline).await?;
        Ok((id, poll.map(Generation::from).map_err(ModelError::from)))
    }

    async fn wait(&self, job: JobRef<'_>, until: Instant) -> Result<Generation, ModelError> {
        let endpoint = &job.model.endpoint_id;
        Ok(RunPodClient::wait(self, endpoint, job.id, until)
            .await?
            .into())
    }

    async fn cancel(&self, job: JobRef<'_>, deadline: Instant) -> Result<(), ModelError> {
        let endpoint = &job.model.endpoint_id;
        Ok(RunPodClient::cancel(self, endpoint, job.id, deadline).await?)
    }

    async fn poll(&self, job: JobRef<'_>, deadline: Instant) -> Result<Generation, ModelError> {
        let endpoint = &job.model.endpoint_id;
        Ok(RunPodClient::poll(self, endpoint, job.id, deadline)
            .await?
            .into())
    }

    /// The vLLM worker streams a job only when its input says
    /// `"stream": true` (worker-vllm `src/utils.py` `JobInput.stream`).
    async fn submit_streaming(
        &self,
        prompt: &Prompt<'_>,
        webhook: Option<&str>,
        deadline: Instant,
    ) -> Result<String, ModelError> {
        let mut input = build_input(prompt);
        input["stream"] = serde_json::json!(true);
        let endpoint = &prompt.model.endpoint_id;
        Ok(RunPodClient::submit(self, endpoint, input, webhook, deadline).await?)
    }

    async fn stream(&self, job: JobRef<'_>, deadline: Instant) -> Result<StreamStep, ModelError> {
        let endpoint = &job.model.endpoint_id;
        let poll = RunPodClient::stream(self, endpoint, job.id, deadline).await?;
        Ok(StreamStep {
            pieces: poll.pieces,
            usage: poll.usage,
            end: poll.end.map(|end| match end {
                RunPodEnd::Completed => StreamEnd::Completed,
                RunPodEnd::Cancelled => StreamEnd::Cancelled,
                RunPodEnd::Failed(e) => StreamEnd::Failed(e.into()),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn delivery(body: serde_json::Value) -> Result<JobDelivery, RunPodError> {
        serde_json::from_value::<Job>(body).unwrap().try_into()
    }

    #[test]
    fn errors_sort_into_timeouts_forgotten_jobs_and_failures() {
        let timed_out = RunPodError::JobTimedOut { job_id: "j".into() };
        assert!(ModelError::from(timed_out).is_timeout());
        let deadline = RunPodError::Deadline { job_id: None };
        assert!(ModelError::from(deadline).is_timeout());
        let gone = RunPodError::Status {
            status: 404,
            body: String::new(),
        };
        assert!(matches!(ModelError::from(gone), ModelError::UnknownJob(_)));
        let failed = RunPodError::JobFailed {
            job_id: "j".into(),
            error: "oom".into(),
        };
        assert!(matches!(ModelError::from(failed), ModelError::Failed(_)));
    }

    #[test]
    fn deliveries_name_their_job_and_whether_it_ended() {
        let done = delivery(json!({"id": "j1", "status": "COMPLETED", "output": "hi"})).unwrap();
        assert_eq!((done.job_id.as_str(), done.finished), ("j1", true));
        let running = delivery(json!({"id": "j2", "status": "IN_PROGRESS"})).unwrap();
        assert!(!running.finished);
        let failed = delivery(json!({"id": "j3", "status": "FAILED", "error": "x"})).unwrap();
        assert!(failed.finished);
        assert!(delivery(json!({"status": "COMPLETED", "output": "no id"})).is_err());
        assert!(delivery(json!({"id": "j4", "status": "EXPLODED"})).is_err());
    }
}
