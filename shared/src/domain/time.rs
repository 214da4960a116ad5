//! Timestamps as stored and served: RFC 3339, UTC, milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};

use super::DomainError;

/// RFC 3339 in UTC with a `Z` and fixed millisecond digits, so stored
/// timestamps also sort correctly as strings.
pub fn format_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An RFC 3339 timestamp, in UTC.
pub fn parse_timestamp(raw: &str) -> Result<DateTime<Utc>, DomainError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| DomainError::InvalidTimestamp)
}
