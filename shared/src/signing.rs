//! Opaque tokens signed with HMAC-SHA256: page cursors and webhook URLs.
//!
//! A token is `base64url(payload).base64url(tag)`, the tag covering a scope
//! and the payload. A token altered, truncated, or issued for another scope
//! fails [`Signer::open`].

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Seals and opens tokens with one derived key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

/// Why a token could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// Not a token of this format.
    #[error("the token is malformed")]
    Malformed,
    /// Altered, or sealed with another key or scope.
    #[error("the token's signature does not match")]
    BadSignature,
}

impl Signer {
    /// A key derived from a server secret and a label, so the same secret
    /// yields unrelated keys for unrelated uses.
    pub fn derive(secret: &[u8], label: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(label.as_bytes());
        Self {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn mac(&self, scope: &str, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    /// A short keyed digest of `payload` for `scope` (16 hex digits): the
    /// same input gives the same digest, and without the key it cannot be
    /// recomputed from a guess (a user id is often an email address).
    pub fn digest(&self, scope: &str, payload: &[u8]) -> String {
        let tag = self.mac(scope, payload).finalize().into_bytes();
        tag[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `payload`, signed for `scope`, as URL-safe text.
    pub fn seal(&self, scope: &str, payload: &[u8]) -> String {
        let tag = self.mac(scope, payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The payload, if the token was sealed by this signer for this scope.
    /// The tag is compared in constant time.
    pub fn open(&self, scope: &str, token: &str) -> Result<Vec<u8>, SignatureError> {
        let (payload, tag) = token.split_once('.').ok_or(SignatureError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| SignatureError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| SignatureError::Malformed)?;
        self.mac(scope, &payload)
            .verify_slice(&tag)
            .map_err(|_| SignatureError::BadSignature)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let s = Signer::derive(b"secret", "label");
        let t = s.seal("scope", b"payload");
        assert_eq!(s.open("scope", &t).unwrap(), b"payload");
        assert_eq!(s.open("other", &t), Err(SignatureError::BadSignature));
        assert_eq!(
            Signer::derive(b"secret", "other-label").open("scope", &t),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            Signer::derive(b"other", "label").open("scope", &t),
            Err(SignatureError::BadSignature)
        );
        assert!(s.open("scope", &t[..t.len() - 2]).is_err());
        assert_eq!(s.open("scope", "nodot"), Err(SignatureError::Malformed));
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(b"other payload"),
            t.split_once('.').unwrap().1
        );
        assert_eq!(s.open("scope", &forged), Err(SignatureError::BadSignature));
    }
}
