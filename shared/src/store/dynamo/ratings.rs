//! Feedback on replies: one conditional `UpdateItem` on the reply's item,
//! which also puts a rated reply in the index under its day.

use aws_sdk_dynamodb::{
    operation::update_item::UpdateItemError,
    types::{ReturnValue, ReturnValuesOnConditionCheckFailure},
};

use super::{
    backend,
    items::{attr, s, Item, MessageItem},
    messages::OWNED,
    DynamoStore,
};
use crate::{
    domain::{
        format_timestamp, ConversationId, Feedback, Message, MessageId, MessageStatus, Role, UserId,
    },
    refusal::Refusal,
    store::{keys, Ratings, StoreError},
};

/// Feedback goes only on a reply no longer being written.
const FINAL_REPLY: &str =
    "#role = :assistant AND (attribute_not_exists(#status) OR #status <> :pending)";

/// What one try at one of the message's two keys found.
enum Rated {
    /// The message as it now stands.
    Done(Box<Message>),
    /// No message under that key.
    Absent,
    /// A user message, or a reply still being written.
    NotFinal,
}

impl Ratings for DynamoStore {
    async fn rate(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
        feedback: Option<&Feedback>,
    ) -> Result<Message, StoreError> {
        // On the active path, or off it: the path first (where replies
        // are read and rated); a second call only for another version.
        for sk in [keys::message_sk(message), keys::off_path_sk(message)] {
            match self
                .rate_at(user, conversation, (message, sk), feedback)
                .await?
            {
                Rated::Done(m) => return Ok(*m),
                Rated::Absent => {}
                Rated::NotFinal => return Err(Refusal::NotRateable.into()),
            }
        }
        Err(Refusal::MessageNotFound.into())
    }
}

impl DynamoStore {
    async fn rate_at(
        &self,
        user: &UserId,
        conversation: ConversationId,
        (message, sk): (MessageId, String),
        feedback: Option<&Feedback>,
    ) -> Result<Rated, StoreError> {
        let key = Item::from([
            (
                keys::PK.to_owned(),
                s(keys::conversation_pk(user, conversation)),
            ),
            (keys::SK.to_owned(), s(sk)),
        ]);
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .expression_attribute_names("#pk", keys::PK)
            .expression_attribute_names("#user", attr::USER_ID)
            .expression_attribute_values(":user", s(user.as_str()))
            .expression_attribute_names("#rating", attr::RATING)
            .expression_attribute_names("#comment", attr::RATING_COMMENT)
            .expression_attribute_names("#at", attr::RATED_AT)
            .expression_attribute_names("#gpk", keys::GSI1PK)
            .expression_attribute_names("#gsk", keys::GSI1SK)
            .return_values(ReturnValue::AllNew)
            // A refused write says what it found: nothing, or a message
            // that takes no feedback.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let update = match feedback {
            None => update
                .condition_expression(OWNED)
                .update_expression("REMOVE #rating, #comment, #at, #gpk, #gsk"),
            Some(f) => {
                let (update, comment) = match &f.comment {
                    Some(c) => (
                        update.expression_attribute_values(":comment", s(c.as_str())),
                        "SET #comment = :comment, ",
                    ),
                    None => (update, "REMOVE #comment SET "),
                };
                update
                    .condition_expression(format!("{OWNED} AND {FINAL_REPLY}"))
                    .expression_attribute_names("#role", attr::ROLE)
                    .expression_attribute_names("#status", attr::STATUS)
                    .expression_attribute_values(":assistant", s(Role::Assistant.as_str()))
                    .expression_attribute_values(":pending", s(MessageStatus::PENDING))
                    .expression_attribute_values(":rating", s(f.rating.as_str()))
                    .expression_attribute_values(":at", s(format_timestamp(f.updated_at)))
                    .expression_attribute_values(":gpk", s(keys::ratings_pk(f.updated_at)))
                    .expression_attribute_values(":gsk", s(keys::rated_sk(f.updated_at, message)))
                    .update_expression(format!(
                        "{comment}#rating = :rating, #at = :at, #gpk = :gpk, #gsk = :gsk"
                    ))
            }
        };
        match update.send().await {
            Ok(out) => {
                let item = out.attributes.ok_or_else(|| {
                    StoreError::Corrupt("UpdateItem rating returned no attributes".into())
                })?;
                Ok(Rated::Done(Box::new(MessageItem::read(item)?)))
            }
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => Ok(match c.item() {
                    Some(found) if !found.is_empty() => Rated::NotFinal,
                    _ => Rated::Absent,
                }),
                _ => Err(backend("UpdateItem rating")(e)),
            },
        }
    }
}
