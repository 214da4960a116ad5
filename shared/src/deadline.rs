//! How long a request may take: the Lambda invocation's deadline less a
//! margin (to store a pending reply and answer in time), or a fixed budget
//! where the invocation carries none.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Lambda sends its deadline in epoch milliseconds. `cargo lambda watch`
/// 1.9 sends its timeout instead (600000): anything before 2001 is no deadline.
const EARLIEST_REAL_DEADLINE_MS: u64 = 1_000_000_000_000;

/// The instant to finish by: `lambda_deadline_ms` (epoch milliseconds)
/// less `margin`, or `fallback` from now less `margin` when there is no
/// real deadline.
pub fn until(lambda_deadline_ms: Option<u64>, margin: Duration, fallback: Duration) -> Instant {
    let budget = lambda_deadline_ms
        .filter(|d| *d > EARLIEST_REAL_DEADLINE_MS)
        .map(|deadline_ms| {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            Duration::from_millis(deadline_ms.saturating_sub(now_ms))
        })
        .unwrap_or(fallback);
    Instant::now() + budget.saturating_sub(margin)
}

/// How long a hold a request takes in the table (a send's claim on its
/// conversation, an `Idempotency-Key` being answered) outlives the
/// request's deadline: enough for the clocks of two machines to disagree,
/// short enough that a request that died blocks others for about a minute.
pub const HOLD_MARGIN: Duration = Duration::from_secs(30);

/// When a hold taken now by a request ending at `deadline` lapses, in wall
/// time (the table compares it with other machines' clocks): by then the
/// request has released it or died.
pub fn hold_lapses(deadline: Instant) -> chrono::DateTime<chrono::Utc> {
    let left = deadline.saturating_duration_since(Instant::now()) + HOLD_MARGIN;
    chrono::Utc::now() + chrono::Duration::from_std(left).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[test]
    fn a_real_deadline_less_the_margin() {
        let left = until(
            Some(now_ms() + 10_000),
            Duration::from_secs(2),
            Duration::ZERO,
        ) - Instant::now();
        assert!(
            left <= Duration::from_secs(8) && left > Duration::from_millis(7_500),
            "{left:?}"
        );
    }

    #[test]
    fn no_deadline_or_a_timeout_in_its_place_uses_the_fallback() {
        for deadline in [None, Some(600_000)] {
            let left =
                until(deadline, Duration::from_secs(2), Duration::from_secs(25)) - Instant::now();
            assert!(left <= Duration::from_secs(23) && left > Duration::from_millis(22_500));
        }
    }

    #[test]
    fn a_past_deadline_leaves_no_time() {
        let left = until(
            Some(now_ms() - 1_000),
            Duration::ZERO,
            Duration::from_secs(25),
        );
        assert!(left <= Instant::now());
    }
}
