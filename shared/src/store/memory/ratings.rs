//! The in-memory store's feedback on replies, with the DynamoDB store's
//! conditions (a final reply of the user's, on the path or off it).

use super::MemoryStore;
use crate::{
    domain::{ConversationId, Feedback, Message, MessageId, UserId},
    refusal::Refusal,
    store::{Ratings, StoreError},
};

impl Ratings for MemoryStore {
    async fn rate(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
        feedback: Option<&Feedback>,
    ) -> Result<Message, StoreError> {
        let mut partitions = self.partitions.lock().unwrap();
        let partition = partitions
            .get_mut(&(user.clone(), conversation))
            .ok_or(Refusal::MessageNotFound)?;
        let found = partition
            .messages
            .iter_mut()
            .chain(partition.off.iter_mut())
            .find(|m| m.id == message)
            .ok_or(Refusal::MessageNotFound)?;
        if feedback.is_some() && !found.takes_feedback() {
            return Err(Refusal::NotRateable.into());
        }
        found.feedback = feedback.cloned().map(Box::new);
        Ok(found.clone())
    }
}
