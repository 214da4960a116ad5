//! Opaque page cursors.
//!
//! A cursor is DynamoDB's `LastEvaluatedKey`, serialised and signed with an
//! HMAC over the key *and the scope it was issued for* (the user and the
//! list). A cursor that was altered, truncated, or issued to another user or
//! for another conversation fails the check and is refused: it can never
//! steer a query into someone else's partition.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::signing::{SignatureError, Signer};

/// Why a cursor was refused.
pub type CursorError = SignatureError;

/// Encodes and checks page cursors.
#[derive(Clone)]
pub struct CursorCodec {
    signer: Signer,
}

impl CursorCodec {
    /// A codec keyed by a key derived from `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            signer: Signer::derive(secret, "chat-service/page-cursor/v1"),
        }
    }

    /// `None` when the key has an attribute that is not a string (our keys
    /// never do).
    pub fn encode(&self, scope: &str, key: &HashMap<String, AttributeValue>) -> Option<String> {
        let plain: BTreeMap<&str, &str> = key
            .iter()
            .map(|(k, v)| v.as_s().ok().map(|s| (k.as_str(), s.as_str())))
            .collect::<Option<_>>()?;
        Some(self.signer.seal(scope, &serde_json::to_vec(&plain).ok()?))
    }

    /// The key a cursor holds, if this server issued it for `scope`.
    pub fn decode(
        &self,
        scope: &str,
        cursor: &str,
    ) -> Result<HashMap<String, AttributeValue>, CursorError> {
        let payload = self.signer.open(scope, cursor)?;
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
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

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
