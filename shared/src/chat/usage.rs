//! Per-user daily quotas (`USER_DAILY_MESSAGE_LIMIT`,
//! `USER_DAILY_TOKEN_LIMIT`): counted in the writes a send already makes
//! (see [`crate::store::Quota`]), and reported by `GET /api/chat/usage`.

use chrono::{DateTime, NaiveDate, Utc};

use super::{Chat, ChatError, ChatModel, Prompt};
use crate::{
    domain::{Reservation, UserId},
    store::{DailyUsage, GenerationCap, Quota, Store},
};

/// The limits of one user's UTC day; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Sends per user per day.
    pub messages: Option<u64>,
    /// Tokens per user per day.
    pub tokens: Option<u64>,
    /// Replies per user in the making at once.
    pub generations: Option<u32>,
    /// The longest a reply can stay unsettled (a pending reply's age limit
    /// and a request's): a live generation older than this is a send that died.
    pub generation_lifetime: std::time::Duration,
}

impl QuotaLimits {
    /// The quota a send made at `now` counts against.
    pub fn at(self, now: DateTime<Utc>) -> Quota {
        Quota {
            day: now.date_naive(),
            message_limit: self.messages,
            token_limit: self.tokens,
            reserve: 0,
            generations: self.generations.map(|max| GenerationCap {
                max,
                stale_before: chrono::TimeDelta::from_std(self.generation_lifetime)
                    .ok()
                    .and_then(|lifetime| now.checked_sub_signed(lifetime))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
            }),
        }
    }
}

/// A user's day: what they used and what they may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageReport {
    /// The UTC day.
    pub day: NaiveDate,
    /// What was used.
    pub used: DailyUsage,
    /// The limits.
    pub limits: QuotaLimits,
    /// When the counts start again from zero (the next UTC midnight).
    pub resets_at: DateTime<Utc>,
}

/// The next UTC midnight after `now`.
pub fn next_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = now.date_naive().succ_opt().unwrap_or(now.date_naive());
    tomorrow.and_hms_opt(0, 0, 0).map_or(now, |t| t.and_utc())
}

impl<S, M: ChatModel> Chat<S, M> {
    /// What a send of `prompt` admitted on `day` holds of the day's token
    /// quota until its reply settles (nothing without a token limit), and
    /// the prompt's estimate, which a stopped reply counts.
    pub(super) fn reservation(&self, prompt: &Prompt<'_>, day: NaiveDate) -> Reservation {
        let bounds = self.model.token_bounds(prompt);
        Reservation {
            day,
            tokens: if self.quota.tokens.is_some() {
                bounds.most.max(1)
            } else {
                0
            },
            prompt: bounds.prompt,
            live: self.quota.generations.is_some(),
        }
    }
}

impl<S: Store, M> Chat<S, M> {
    /// What `user` used today, and their limits.
    pub async fn usage(&self, user: &UserId) -> Result<UsageReport, ChatError> {
        let now = Utc::now();
        let day = now.date_naive();
        Ok(UsageReport {
            day,
            used: self.store.daily_usage(user, day).await?,
            limits: self.quota,
            resets_at: next_midnight(now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_resets_at_the_next_utc_midnight() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert_eq!(
            next_midnight(at("2026-11-30T23:59:59Z")),
            at("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            next_midnight(at("2026-12-31T00:00:00Z")),
            at("2027-01-01T00:00:00Z")
        );
    }
}
