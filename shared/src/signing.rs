//! Tokens signed with HMAC-SHA256 (page cursors) or encrypted with
//! AES-256-GCM (webhook URLs, which must not show whose reply they complete).
//!
//! A signed token is `base64url(payload).base64url(tag)`, the tag covering a
//! scope and the payload. An encrypted one is `base64url(nonce ‖ ciphertext
//! ‖ tag)`, the scope as associated data. A token altered, truncated, or
//! issued for another scope fails [`Signer::open`] / [`Signer::open_secret`].

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Seals and opens tokens with one derived key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    /// The encryption key of [`Signer::seal_secret`], derived from `key`
    /// once (never the MAC key itself).
    aead_key: Vec<u8>,
}

/// HMAC-SHA256 of `label` under `secret`: a 32-byte key for one use.
fn derive_key(secret: &[u8], label: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().to_vec()
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
        let key = derive_key(secret, label);
        let aead_key = derive_key(&key, "aes-256-gcm");
        Self { key, aead_key }
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

    /// `payload`, encrypted and authenticated for `scope`, as URL-safe text
    /// that tells nothing of it. Deterministic (the same payload gives the
    /// same token, as a signed one does): the nonce is a MAC of the scope
    /// and payload, the synthetic-IV construction (RFC 5297), so a nonce
    /// repeats only for a repeated payload, which then reveals no more
    /// than that it repeated.
    pub fn seal_secret(&self, scope: &str, payload: &[u8]) -> String {
        let nonce = self.synthetic_nonce(scope, payload);
        let mut sealed = payload.to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(scope.as_bytes()),
                &mut sealed,
            )
            .expect("AES-GCM seals payloads of any size a URL can carry");
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The payload of a token [`Self::seal_secret`] made for this scope.
    pub fn open_secret(&self, scope: &str, token: &str) -> Result<Vec<u8>, SignatureError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| SignatureError::Malformed)?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(SignatureError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SignatureError::Malformed)?;
        let mut sealed = sealed.to_vec();
        let payload = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(scope.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SignatureError::BadSignature)?
            .to_vec();
        if self.synthetic_nonce(scope, &payload) != nonce {
            return Err(SignatureError::BadSignature);
        }
        Ok(payload)
    }

    /// The encryption key, ready for one seal or open.
    fn aead(&self) -> LessSafeKey {
        let key = UnboundKey::new(&AES_256_GCM, &self.aead_key).expect("a 32-byte key");
        LessSafeKey::new(key)
    }

    fn synthetic_nonce(&self, scope: &str, payload: &[u8]) -> [u8; NONCE_LEN] {
        let tag = self.mac(scope, payload).finalize().into_bytes();
        let mut nonce = [0; NONCE_LEN];
        nonce.copy_from_slice(&tag[..NONCE_LEN]);
        nonce
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
