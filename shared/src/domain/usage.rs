//! Tokens: what a reply counts, what a send reserves of a daily quota
//! until its reply settles, and how workers' usage reports add up.

use serde::{Deserialize, Serialize};

use super::ReplyOutcome;

/// Characters per token when a worker reports no usage: the usual rule of
/// thumb for English text with the common tokenizers.
pub const CHARS_PER_TOKEN: u64 = 4;

/// Template tokens a chat template adds around each message (role
/// headers, end-of-turn markers: Llama 3's adds 4 or 5, ChatML's 5), with room.
pub const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 16;
/// Tokens a template adds once (begin-of-text, the assistant's opening,
/// a default system header such as Llama 3.1's dated one).
pub const TEMPLATE_TOKENS_ONCE: u64 = 64;

/// The estimate of what one message of `chars` characters takes of a
/// model's context: the quota's one token per [`CHARS_PER_TOKEN`]
/// characters, and its template's [`TEMPLATE_TOKENS_PER_MESSAGE`].
pub fn message_tokens_estimate(chars: usize) -> u64 {
    (chars as u64).div_ceil(CHARS_PER_TOKEN) + TEMPLATE_TOKENS_PER_MESSAGE
}

/// The tokens a reply counts for in a user's quota: what the worker
/// reported (prompt and reply), or, without a report, one per
/// [`CHARS_PER_TOKEN`] characters of the reply.
pub fn tokens_used(text: &str, usage: Option<Usage>) -> u64 {
    match usage {
        Some(u) => u.total(),
        None => (text.chars().count() as u64).div_ceil(CHARS_PER_TOKEN),
    }
}

/// The tokens a reply holds of its user's daily token quota from the send
/// that admitted it until it settles: what the job could count at most
/// (the prompt's upper bound and the reply's `max_tokens`), so parallel
/// sends cannot all pass a quota that each alone is under. Kept with the
/// pending reply, since its settler may be another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The UTC day the send was admitted on, which the reply counts on.
    pub day: chrono::NaiveDate,
    /// What is held until the reply settles.
    pub tokens: u64,
    /// The prompt's estimate ([`CHARS_PER_TOKEN`]), which a stopped reply
    /// counts (with what it wrote) since the worker reported nothing.
    pub prompt: u64,
    /// The reply was admitted as one of its user's live generations (under
    /// `USER_MAX_CONCURRENT_GENERATIONS`), which its settlement ends.
    pub live: bool,
}

/// What a job for a history can count: [`Reservation`]'s figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBounds {
    /// The most tokens the job can count, prompt and reply.
    pub most: u64,
    /// The prompt's estimate.
    pub prompt: u64,
}

/// How a reply's settlement changes its day's counts: `tokens` is what it
/// counts, `held` what the quota check sees (counted tokens plus the
/// reservations of replies not settled yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settlement {
    /// The day.
    pub day: chrono::NaiveDate,
    /// Added to the day's tokens.
    pub tokens: u64,
    /// Added to the day's held tokens (negative: a reservation let go).
    pub held: i64,
}

impl Settlement {
    /// A reply that counts `tokens` and lets its reservation go; counted on
    /// the reservation's day, or on `day` for a reply admitted without one.
    pub fn of(reserved: Option<Reservation>, tokens: u64, day: chrono::NaiveDate) -> Self {
        let (day, reserved) = reserved.map_or((day, 0), |r| (r.day, r.tokens));
        let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Self {
            day,
            tokens,
            held: signed(tokens).saturating_sub(signed(reserved)),
        }
    }

    /// Whether it changes nothing (no write needed).
    pub fn is_empty(&self) -> bool {
        self.tokens == 0 && self.held == 0
    }
}

/// What a reply that ended with `outcome` counts: a complete one what the
/// worker reported (or its estimate), a stopped one its prompt's estimate
/// (its text, written before the stop, is counted when the stream that
/// wrote it keeps it), a failed one nothing.
pub fn outcome_tokens(outcome: &ReplyOutcome, reserved: Option<Reservation>) -> u64 {
    match outcome {
        ReplyOutcome::Complete { text, usage, .. } => tokens_used(text, *usage),
        ReplyOutcome::Cancelled { text } => {
            reserved.map_or(0, |r| r.prompt) + tokens_used(text, None)
        }
        ReplyOutcome::Failed { .. } => 0,
    }
}

impl Usage {
    /// Both counts added, or `None` if either overflows (a worker's
    /// numbers are not trusted to be sane).
    pub fn checked_add(self, other: Usage) -> Option<Usage> {
        Some(Usage {
            input_tokens: self.input_tokens.checked_add(other.input_tokens)?,
            output_tokens: self.output_tokens.checked_add(other.output_tokens)?,
        })
    }
}

/// Token counts reported piece by piece (the entries of an output, a
/// stream's chunks), counted once per reply: unknown until a piece reports
/// some.
///
/// Workers report in one of two ways, told apart by the reports
/// themselves:
///
/// - **running totals**: RunPod's vLLM worker (`worker-vllm`,
///   `src/engine.py`, `_generate_vllm`) puts `{"input": <prompt tokens>,
///   "output": <output tokens so far>}` on every streamed batch: the prompt
///   the same each time, the output never going down. The reply's usage is
///   the last report; adding them would count the prompt once per batch.
/// - **deltas**: each piece reports its own tokens (the prompt, if at all,
///   on one piece only); the reply's usage is their sum.
///
/// Reports are taken as running totals while every one repeats the first
/// one's non-zero prompt count and none has fewer output tokens than the
/// one before; any other report makes them deltas. One report is both.
/// A sum that overflows is unknown for good (the numbers are not trusted to
/// be sane); running totals do not add and cannot overflow.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageSum {
    sum: Option<Usage>,
    overflowed: bool,
    last: Option<Usage>,
    /// Every report so far could be a running total.
    running: bool,
}

impl UsageSum {
    /// Takes what one more piece reports.
    pub fn add(&mut self, more: Option<Usage>) {
        let Some(more) = more else { return };
        self.running = match self.last {
            None => more.input_tokens > 0,
            Some(last) => {
                self.running
                    && more.input_tokens == last.input_tokens
                    && more.output_tokens >= last.output_tokens
            }
        };
        self.last = Some(more);
        if !self.overflowed {
            self.sum = self.sum.unwrap_or_default().checked_add(more);
            self.overflowed = self.sum.is_none();
        }
    }

    /// The reply's usage from the reports so far.
    pub fn total(&self) -> Option<Usage> {
        if self.running {
            return self.last;
        }
        self.sum
    }
}

/// Token counts reported by the model worker, when it reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// Tokens of the prompt.
    pub input_tokens: u64,
    /// Tokens of the reply.
    pub output_tokens: u64,
}

impl Usage {
    /// The prompt's and the reply's tokens together.
    pub fn total(self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}
