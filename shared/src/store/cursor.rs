//! Opaque page cursors.
//!
//! A cursor is DynamoDB's `LastEvaluatedKey`, serialised and signed with an
//! HMAC over the key *and the scope it was issued for* (the user and the
//! list). A cursor that was altered, truncated, or issued to another user or
//! for another conversation fails the check and is refused: it can never
//! steer a query into someone else's partition.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct CursorCodec {
    key: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("the cursor is malformed")]
    Malformed,
    #[error("the cursor was not issued for this list")]
    BadSignature,
}

impl CursorCodec {
    /// Derives the cursor key from a server secret, labelled so that the
    /// same secret used elsewhere yields an unrelated key.
    pub fn new(secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"chat-service/page-cursor/v1");
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

    /// `None` when the key has an attribute that is not a string (our keys
    /// never do).
    pub fn encode(&self, scope: &str, key: &HashMap<String, AttributeValue>) -> Option<String> {
        let plain: BTreeMap<&str, &str> = key
            .iter()
            .map(|(k, v)| v.as_s().ok().map(|s| (k.as_str(), s.as_str())))
            .collect::<Option<_>>()?;
        let payload = serde_json::to_vec(&plain).ok()?;
        let tag = self.mac(scope, &payload).finalize().into_bytes();
        Some(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    pub fn decode(
        &self,
        scope: &str,
        cursor: &str,
    ) -> Result<HashMap<String, AttributeValue>, CursorError> {
        let (payload, tag) = cursor.split_once('.').ok_or(CursorError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CursorError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CursorError::Malformed)?;
        // Constant-time comparison.
        self.mac(scope, &payload)
            .verify_slice(&tag)
            .map_err(|_| CursorError::BadSignature)?;
        let plain: BTreeMap<String, String> =
            serde_json::from_slice(&payload).map_err(|_| CursorError::Malformed)?;
        Ok(plain
            .into_iter()
            .map(|(k, v)| (k, AttributeValue::S(v)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("PK".to_owned(), AttributeValue::S("USER#a#CONV#1".into())),
            ("SK".to_owned(), AttributeValue::S("MSG#2".into())),
        ])
    }

    #[test]
    fn round_trip() {
        let codec = CursorCodec::new(b"secret");
        let c = codec.encode("scope", &key()).unwrap();
        assert_eq!(codec.decode("scope", &c).unwrap(), key());
    }

    #[test]
    fn other_scope_or_secret_is_refused() {
        let codec = CursorCodec::new(b"secret");
        let c = codec.encode("scope-a", &key()).unwrap();
        assert_eq!(codec.decode("scope-b", &c), Err(CursorError::BadSignature));
        let other = CursorCodec::new(b"other");
        assert_eq!(other.decode("scope-a", &c), Err(CursorError::BadSignature));
    }

    #[test]
    fn tampered_and_truncated_cursors_are_refused() {
        let codec = CursorCodec::new(b"secret");
        let c = codec.encode("s", &key()).unwrap();
        let (payload, tag) = c.split_once('.').unwrap();
        let mut forged: BTreeMap<String, String> =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        forged.insert("PK".into(), "USER#b#CONV#1".into());
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap())
        );
        assert_eq!(codec.decode("s", &forged), Err(CursorError::BadSignature));
        assert!(codec.decode("s", &c[..c.len() - 3]).is_err());
        assert_eq!(codec.decode("s", "garbage"), Err(CursorError::Malformed));
        assert_eq!(codec.decode("s", ""), Err(CursorError::Malformed));
        assert!(codec.decode("s", "!!.??").is_err());
    }
}
