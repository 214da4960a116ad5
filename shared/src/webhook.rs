//! RunPod webhook URLs. RunPod does not sign its webhook calls, so each URL
//! carries a token naming the reply it completes (user, conversation,
//! message) and when it expires, encrypted with a server key: RunPod keeps
//! the URL with the job, and must not learn whose reply it is (the user id
//! is often an email address). A delivery is only a trigger: the service
//! then asks RunPod itself how the job ended.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    domain::{ConversationId, MessageId, UserId},
    signing::Signer,
};

const SCOPE: &str = "runpod-webhook";

/// Issues and verifies webhook URLs; built once per cold start.
#[derive(Clone)]
pub struct Webhooks {
    base_url: Option<String>,
    signer: Signer,
    /// How long a URL stays good after it was issued.
    lifetime: Duration,
}

/// Why a webhook token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookTokenError {
    /// Not a token this server sealed (or not one at all).
    #[error("the webhook token is not ours")]
    Invalid,
    /// Ours, but past its expiry.
    #[error("the webhook token has expired")]
    Expired,
}

/// The reply a webhook URL completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// The reply's owner.
    pub user: UserId,
    /// The reply's conversation.
    pub conversation: ConversationId,
    /// The pending reply.
    pub message: MessageId,
}

/// A [`WebhookTarget`] as sealed into the token: short names keep URLs short.
#[derive(Serialize, Deserialize)]
struct Target {
    u: String,
    c: String,
    m: String,
    /// Expiry, in seconds since the epoch.
    e: i64,
}

impl Webhooks {
    /// URLs under `base_url` (none without one), sealed with a key derived
    /// from `secret`, good for `lifetime` after they are issued.
    pub fn new(base_url: Option<String>, secret: &[u8], lifetime: Duration) -> Self {
        Self {
            base_url,
            signer: Signer::derive(secret, "chat-service/runpod-webhook/v3"),
            lifetime,
        }
    }

    /// The URL RunPod should post the finished job to, when webhooks are configured.
    pub fn url_for(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
    ) -> Option<String> {
        let base = self.base_url.as_ref()?;
        Some(format!(
            "{base}/{}",
            self.token_for(user, conversation, message)
        ))
    }

    /// The token of a URL: the target and its expiry, sealed.
    pub fn token_for(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
    ) -> String {
        let lifetime = chrono::Duration::from_std(self.lifetime).unwrap_or(chrono::Duration::MAX);
        let expires = Utc::now()
            .checked_add_signed(lifetime)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.token_until(user, conversation, message, expires)
    }

    /// A token for the target that expires at `expires` (the sample events
    /// carry one good until 2100).
    pub fn token_until(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
        expires: DateTime<Utc>,
    ) -> String {
        self.seal(&Target {
            u: user.to_string(),
            c: conversation.to_string(),
            m: message.to_string(),
            e: expires.timestamp(),
        })
    }

    fn seal(&self, target: &Target) -> String {
        let payload = serde_json::to_vec(target).expect("strings and numbers serialize");
        self.signer.seal_secret(SCOPE, &payload)
    }

    /// The reply a token names, if this server issued it and it has not expired.
    pub fn verify(&self, token: &str) -> Result<WebhookTarget, WebhookTokenError> {
        let (target, expires) = self.open(token).ok_or(WebhookTokenError::Invalid)?;
        if Utc::now().timestamp() > expires {
            return Err(WebhookTokenError::Expired);
        }
        Ok(target)
    }

    /// The target and expiry a token seals, if this server sealed it.
    fn open(&self, token: &str) -> Option<(WebhookTarget, i64)> {
        let payload = self.signer.open_secret(SCOPE, token).ok()?;
        let t: Target = serde_json::from_slice(&payload).ok()?;
        let target = WebhookTarget {
            user: UserId::parse(&t.u).ok()?,
            conversation: ConversationId::parse(&t.c).ok()?,
            message: MessageId::parse(&t.m).ok()?,
        };
        Some((target, t.e))
    }
}

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn ids() -> (UserId, ConversationId, MessageId) {
        let user = UserId::parse("alice").unwrap();
        (user, ConversationId::new(), MessageId::new())
    }

    #[test]
    fn tokens_name_their_reply_and_cannot_be_forged() {
        let base = "https://api.example/api/chat/runpod/webhook";
        let w = Webhooks::new(Some(base.into()), b"secret", HOUR);
        let (u, c, m) = ids();
        let url = w.url_for(&u, c, m).unwrap();
        let token = url.rsplit('/').next().unwrap();
        assert!(url.starts_with("https://api.example/api/chat/runpod/webhook/"));
        let target = WebhookTarget {
            user: u.clone(),
            conversation: c,
            message: m,
        };
        assert_eq!(w.verify(token), Ok(target));
        let other = Webhooks::new(None, b"other", HOUR);
        assert_eq!(other.verify(token), Err(WebhookTokenError::Invalid));
        assert_eq!(w.verify(&token[1..]), Err(WebhookTokenError::Invalid));
        assert_eq!(w.verify(""), Err(WebhookTokenError::Invalid));
        // Opaque: nothing of the target shows, however the token is read.
        let decoded = URL_SAFE_NO_PAD.decode(token).unwrap();
        for part in [u.as_str().to_owned(), c.to_string(), m.to_string()] {
            assert!(!token.contains(&part) && !String::from_utf8_lossy(&decoded).contains(&part));
        }
        let mut flipped = decoded.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let flipped = URL_SAFE_NO_PAD.encode(flipped);
        assert_eq!(w.verify(&flipped), Err(WebhookTokenError::Invalid));
        let unset = Webhooks::new(None, b"secret", HOUR);
        assert_eq!(unset.url_for(&u, c, m), None);
    }

    #[test]
    fn a_token_past_its_lifetime_is_expired() {
        let (u, c, m) = ids();
        let w = Webhooks::new(None, b"secret", HOUR);
        let sealed =
            |secs: i64| w.token_until(&u, c, m, Utc::now() + chrono::Duration::seconds(secs));
        assert_eq!(w.verify(&sealed(-2)), Err(WebhookTokenError::Expired));
        assert!(w.verify(&sealed(60)).is_ok());
        assert!(w.verify(&w.token_for(&u, c, m)).is_ok());
    }
}
