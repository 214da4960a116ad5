//! [`Refusal`]: a request the service declines for what it asks, not for a
//! failure. The store finds it, the use case passes it on unchanged, and the
//! HTTP layer maps it to a status and a stable code in one place
//! (`http::error`).

/// Why a request is declined. Nothing was stored by the request (except
/// where a variant says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No such conversation for this user (it may exist for another one).
    #[error("conversation not found")]
    NotFound,
    /// A reply in the conversation is still pending (or a send holds it).
    #[error("a reply is pending in this conversation")]
    ReplyPending,
    /// The user's daily quota is used up.
    #[error("the daily quota is used up")]
    QuotaExceeded,
    /// The user has as many replies in the making as they may.
    #[error("too many replies are being generated at once")]
    TooManyGenerations,
    /// A stop with no reply being written.
    #[error("no reply is being written in this conversation")]
    NoReplyInProgress,
    /// The user stopped the reply while the send waited for it; the user's
    /// message is stored, the reply `cancelled`.
    #[error("the reply was stopped")]
    ReplyCancelled,
    /// A regenerate naming a user message, an edit naming an assistant's,
    /// or either naming a message that is not on the active path.
    #[error("the message cannot be regenerated or edited")]
    InvalidTarget,
    /// Feedback on a user message, or on a reply still being written.
    #[error("the message takes no feedback")]
    NotRateable,
    /// A share link that is not there (or not the user's, or revoked).
    #[error("share link not found")]
    ShareNotFound,
    /// The active path is too long for one shared copy.
    #[error("the conversation is too long to share")]
    TooLongToShare,
    /// A message of the conversation that is not there (or not the user's).
    #[error("message not found")]
    MessageNotFound,
    /// A regenerate, edit or switch that would move more messages on or off
    /// the active path than one write can ([`crate::domain::MAX_MOVED`]).
    #[error("the branch change reaches too far back")]
    TooFarBack,
}
