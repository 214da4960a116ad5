//! Feedback on replies: a rating with an optional comment, given,
//! replaced or taken back by the user.

use super::{Chat, ChatError};
use crate::{
    domain::{ConversationId, Feedback, Message, MessageId, UserId},
    store::Store,
};

impl<S: Store, M> Chat<S, M> {
    /// Gives (`Some`) or takes back (`None`) the user's feedback on reply
    /// `message`: the message as it then stands. Each rating given is one
    /// log line (the model and the rating, never the comment) for the
    /// operators; the README says how to list a day's ratings.
    pub async fn rate(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
        feedback: Option<Feedback>,
    ) -> Result<Message, ChatError> {
        let rated = self
            .store
            .rate(user, conversation, message, feedback.as_ref())
            .await?;
        match &rated.feedback {
            Some(f) => tracing::info!(
                model = rated.model.as_ref().map(|m| m.as_str()),
                rating = f.rating.as_str(),
                commented = f.comment.is_some(),
                "reply rated"
            ),
            None => tracing::info!("reply rating taken back"),
        }
        Ok(rated)
    }
}
