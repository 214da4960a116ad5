//! RunPod webhook URLs. RunPod does not sign its webhook calls, so each URL
//! carries a token naming the reply it completes (user, conversation,
//! message), sealed with a server key; the job id in the delivered body must
//! then match the job stored on that pending message.

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
}

impl Webhooks {
    /// URLs under `base_url` (none without one), sealed with a key derived from `secret`.
    pub fn new(base_url: Option<String>, secret: &[u8]) -> Self {
        Self {
            base_url,
            signer: Signer::derive(secret, "chat-service/runpod-webhook/v1"),
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

    /// The token of a URL: the target, sealed.
    pub fn token_for(
        &self,
        user: &UserId,
        conversation: ConversationId,
        message: MessageId,
    ) -> String {
        let target = Target {
            u: user.to_string(),
            c: conversation.to_string(),
            m: message.to_string(),
        };
        self.signer.seal(
            SCOPE,
            &serde_json::to_vec(&target).expect("strings serialize"),
        )
    }

    /// The reply a token names, if this server issued it.
    pub fn verify(&self, token: &str) -> Option<WebhookTarget> {
        let payload = self.signer.open(SCOPE, token).ok()?;
        let t: Target = serde_json::from_slice(&payload).ok()?;
        Some(WebhookTarget {
            user: UserId::parse(&t.u).ok()?,
            conversation: ConversationId::parse(&t.c).ok()?,
            message: MessageId::parse(&t.m).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_reply_and_cannot_be_forged() {
        let w = Webhooks::new(
            Some("https://api.example/api/chat/runpod/webhook".into()),
            b"secret",
        );
        let (u, c, m) = (
            UserId::parse("alice").unwrap(),
            ConversationId::new(),
            MessageId::new(),
        );
        let url = w.url_for(&u, c, m).unwrap();
        let token = url.rsplit('/').next().unwrap();
        assert!(url.starts_with("https://api.example/api/chat/runpod/webhook/"));
        let target = WebhookTarget {
            user: u.clone(),
            conversation: c,
            message: m,
        };
        assert_eq!(w.verify(token), Some(target));
        assert_eq!(Webhooks::new(None, b"other").verify(token), None);
        assert_eq!(w.verify(&token[1..]), None);
        assert_eq!(w.verify(""), None);
        assert_eq!(Webhooks::new(None, b"secret").url_for(&u, c, m), None);
    }
}
