//! Bearer JWT (HS256 with `JWT_SECRET`) to [`UserId`].

use std::{collections::HashMap, sync::Mutex};

use http::HeaderMap;
use jsonwebtoken::{
    decode, encode, errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};

use crate::{config::Config, domain::UserId, signing::Signer};

/// Checks tokens. Built once per cold start.
pub struct Authenticator {
    /// `None` in the functions that take no user tokens (RunPod's webhook).
    key: Option<DecodingKey>,
    validation: Validation,
    /// Keys the pseudonyms users appear under in the logs.
    log_ids: Signer,
    /// Tokens that passed the whole check, by their text, with the subject
    /// and expiry: a client sends the same token on every request until it
    /// expires. The same text under the same key and settings always checks
    /// the same way but for time, so a hit is only taken before its `exp`.
    verified: Mutex<HashMap<Box<str>, Verified>>,
}

/// A token that passed the whole check.
struct Verified {
    user: UserId,
    /// Its `exp`, in seconds since the epoch.
    exp: f64,
}

/// Most tokens kept verified: one Lambda instance serves a few users at a
/// time, and a full cache is emptied rather than searched for the oldest.
const VERIFIED_MAX: usize = 64;
/// Longer tokens are checked every time, so the cache stays small.
const VERIFIED_TOKEN_MAX_BYTES: usize = 2048;

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no Authorization header")]
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("the Authorization header is not a Bearer token")]
    NotBearer,
    /// The token's `exp` has passed.
    #[error("the token is expired")]
    Expired,
    /// A token that is malformed, wrongly signed, or misses a required claim.
    #[error("the token is invalid")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// A `sub` that is not a valid user id.
    #[error("the token's sub is not a valid user id")]
    BadSubject,
    /// A webhook URL token this server did not sign.
    #[error("the webhook token is missing or not ours")]
    BadWebhookToken,
    /// A webhook URL token past its expiry.
    #[error("the webhook token has expired")]
    ExpiredWebhookToken,
    /// This function takes no user tokens (it has no `JWT_SECRET`).
    #[error("this function does not take user tokens")]
    NoUserTokens,
}

/// What the service reads of a verified token: its subject. `iss`, `aud`,
/// `exp` and `nbf` are checked by jsonwebtoken on the raw claims, so `aud`
/// may be a string or an array (RFC 7519, section 4.1.3).
#[derive(Debug, Deserialize)]
struct Subject {
    sub: String,
    /// Required and checked by jsonwebtoken; read again (a JSON number,
    /// integer or not) to know until when the token may be taken as checked.
    exp: Option<f64>,
}

/// The claims `issue_token` signs.
#[derive(Debug, Serialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

impl Authenticator {
    /// A checker for the configured secret, issuer and audience, naming
    /// users in the logs with a key derived from `signing_key`.
    pub fn new(config: &Config, signing_key: &[u8]) -> Self {
        // Pinned to HS256: a token naming any other algorithm, `none`
        // included, fails before its signature is looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        // jsonwebtoken checks `iss`/`aud` only when present, so a configured
        // issuer or audience must also be a required claim.
        let mut required = vec!["exp", "sub"];
        required.extend(config.jwt_issuer.as_ref().map(|_| "iss"));
        required.extend(config.jwt_audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        validation.leeway = 30;
        // A token not valid yet is refused, with the same leeway as `exp`.
        validation.validate_nbf = true;
        match &config.jwt_issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Self {
            key: config
                .jwt_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            validation,
            log_ids: Signer::derive(signing_key, "log-ids"),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The name `user` goes by in the logs: a keyed digest, the same for
    /// every request of theirs, that does not give away the `sub` (often
    /// an email address) to whoever reads the logs.
    pub fn log_id(&self, user: &UserId) -> String {
        self.log_ids.digest("user", user.as_str().as_bytes())
    }

    /// The caller named by the request's `Authorization: Bearer` token.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<UserId, AuthError> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?
            .to_str()
            .map_err(|_| AuthError::NotBearer)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        let key = self.key.as_ref().ok_or(AuthError::NoUserTokens)?;
        let token = token.trim();
        let now = jsonwebtoken::get_current_timestamp() as f64;
        if let Some(user) = self.verified_before(token, now) {
            return Ok(user);
        }
        let data = decode::<Subject>(token, key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e),
        })?;
        let user = UserId::parse(&data.claims.sub).map_err(|_| AuthError::BadSubject)?;
        if let Some(exp) = data.claims.exp {
            self.remember(token, &user, exp, now);
        }
        Ok(user)
    }

    /// The subject of `token` if it passed the check before and its `exp`
    /// has not come (past it, within the leeway, the full check decides).
    fn verified_before(&self, token: &str, now: f64) -> Option<UserId> {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        let hit = verified.get(token)?;
        (now <= hit.exp).then(|| hit.user.clone())
    }

    fn remember(&self, token: &str, user: &UserId, exp: f64, now: f64) {
        if token.len() > VERIFIED_TOKEN_MAX_BYTES || now > exp {
            return;
        }
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_MAX {
            verified.retain(|_, v| now <= v.exp);
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
        }
        let user = user.clone();
        verified.insert(token.into(), Verified { user, exp });
    }
}

/// Mints an HS256 token: for the dev `mint-token` tool, the sample events and tests.
pub fn issue_token(
    secret: &str,
    sub: &str,
    ttl_secs: u64,
    iss: Option<&str>,
    aud: Option<&str>,
) -> String {
    let claims = Claims {
        sub: sub.to_owned(),
        exp: jsonwebtoken::get_current_timestamp() + ttl_secs,
        iss: iss.map(str::to_owned),
        aud: aud.map(str::to_owned),
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing with an in-memory key cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use serde_json::json;

    const SECRET: &str = "test-secret-test-secret-test-secret";

    fn config(iss: Option<&str>, aud: Option<&str>) -> Config {
        Config::from_lookup(|k| match k {
            "TABLE_NAME" => Some("t".into()),
            "JWT_SECRET" => Some(SECRET.into()),
            "JWT_ISSUER" => iss.map(str::to_owned),
            "JWT_AUDIENCE" => aud.map(str::to_owned),
            _ => None,
        })
        .unwrap()
    }

    fn checker(config: &Config) -> Authenticator {
        Authenticator::new(config, b"signing-secret")
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn check(auth: &Authenticator, token: &str) -> Result<UserId, AuthError> {
        auth.authenticate(&headers(&format!("Bearer {token}")))
    }

    fn sign_raw(header: serde_json::Value, claims: serde_json::Value, secret: &str) -> String {
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let msg = format!("{h}.{c}");
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(msg.as_bytes());
        format!(
            "{msg}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn future() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    #[test]
    fn valid_token_gives_the_subject() {
        let auth = checker(&config(None, None));
        let user = check(&auth, &issue_token(SECRET, "alice", 600, None, None)).unwrap();
        assert_eq!(user.as_str(), "alice");
    }

    #[test]
    fn expired_token_is_rejected() {
        let auth = checker(&config(None, None));
        let token = sign_raw(
            json!({"alg": "HS256", "typ": "JWT"}),
            json!({"sub": "alice", "exp": jsonwebtoken::get_current_timestamp() - 3600}),
            SECRET,
        );
        assert!(matches!(check(&auth, &token), Err(AuthError::Expired)));
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let auth = checker(&config(None, None));
        let token = issue_token("another-secret-another-secret-xx", "alice", 600, None, None);
        assert!(matches!(check(&auth, &token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn alg_none_is_rejected() {
        let auth = checker(&config(None, None));
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
        let c = URL_SAFE_NO_PAD.encode(json!({"sub": "alice", "exp": future()}).to_string());
        for token in [format!("{h}.{c}."), format!("{h}.{c}")] {
            assert!(matches!(check(&auth, &token), Err(AuthError::Invalid(_))));
        }
    }

    #[test]
    fn other_algorithms_are_rejected_even_when_signed_with_the_secret() {
        let auth = checker(&config(None, None));
        let token = encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "alice", "exp": future()}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(check(&auth, &token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn missing_sub_or_exp_is_rejected() {
        let auth = checker(&config(None, None));
        let no_sub = sign_raw(json!({"alg": "HS256"}), json!({"exp": future()}), SECRET);
        assert!(check(&auth, &no_sub).is_err());
        let no_exp = sign_raw(json!({"alg": "HS256"}), json!({"sub": "alice"}), SECRET);
        assert!(check(&auth, &no_exp).is_err());
        let empty_sub = sign_raw(
            json!({"alg": "HS256"}),
            json!({"sub": "", "exp": future()}),
            SECRET,
        );
        assert!(matches!(
            check(&auth, &empty_sub),
            Err(AuthError::BadSubject)
        ));
    }

    #[test]
    fn header_must_be_a_bearer_token() {
        let auth = checker(&config(None, None));
        assert!(matches!(
            auth.authenticate(&HeaderMap::new()),
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            auth.authenticate(&headers("Basic abc")),
            Err(AuthError::NotBearer)
        ));
        assert!(matches!(
            auth.authenticate(&headers("Bearer")),
            Err(AuthError::NotBearer)
        ));
        assert!(matches!(
            auth.authenticate(&headers("Bearer not.a.jwt")),
            Err(AuthError::Invalid(_))
        ));
        let token = issue_token(SECRET, "alice", 600, None, None);
        assert!(auth
            .authenticate(&headers(&format!("bearer {token}")))
            .is_ok());
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let auth = checker(&config(Some("https://issuer"), Some("chat")));
        let good = issue_token(SECRET, "alice", 600, Some("https://issuer"), Some("chat"));
        assert!(check(&auth, &good).is_ok());
        let wrong_iss = issue_token(SECRET, "alice", 600, Some("https://evil"), Some("chat"));
        assert!(check(&auth, &wrong_iss).is_err());
        let wrong_aud = issue_token(SECRET, "alice", 600, Some("https://issuer"), Some("other"));
        assert!(check(&auth, &wrong_aud).is_err());
        let none = issue_token(SECRET, "alice", 600, None, None);
        assert!(check(&auth, &none).is_err());
    }

    #[test]
    fn an_audience_may_be_a_list_that_names_ours() {
        let auth = checker(&config(None, Some("chat")));
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let listed = json!({"sub": "alice", "exp": exp, "aud": ["billing", "chat"]});
        assert!(check(&auth, &sign_raw(header.clone(), listed, SECRET)).is_ok());
        let others = json!({"sub": "alice", "exp": exp, "aud": ["billing", "crm"]});
        assert!(check(&auth, &sign_raw(header, others, SECRET)).is_err());
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_past_the_leeway() {
        let auth = checker(&config(None, None));
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let now = jsonwebtoken::get_current_timestamp();
        let token = |nbf: u64| {
            let claims = json!({"sub": "alice", "exp": now + 600, "nbf": nbf});
            sign_raw(header.clone(), claims, SECRET)
        };
        assert!(
            check(&auth, &token(now + 300)).is_err(),
            "five minutes early"
        );
        assert!(check(&auth, &token(now + 10)).is_ok(), "within the leeway");
        assert!(check(&auth, &token(now - 60)).is_ok());
    }

    fn remembered(auth: &Authenticator, token: &str) -> bool {
        auth.verified.lock().unwrap().contains_key(token)
    }

    #[test]
    fn a_checked_token_is_remembered_until_its_exp() {
        let auth = checker(&config(None, None));
        let token = issue_token(SECRET, "alice", 600, None, None);
        assert!(!remembered(&auth, &token));
        assert_eq!(check(&auth, &token).unwrap().as_str(), "alice");
        assert!(remembered(&auth, &token));
        assert_eq!(check(&auth, &token).unwrap().as_str(), "alice");

        let exp = auth.verified.lock().unwrap()[token.as_str()].exp;
        assert_eq!(auth.verified_before(&token, exp).unwrap().as_str(), "alice");
        assert!(
            auth.verified_before(&token, exp + 1.0).is_none(),
            "past exp"
        );
    }

    #[test]
    fn only_the_same_text_is_taken_as_checked() {
        let auth = checker(&config(None, None));
        let token = issue_token(SECRET, "alice", 600, None, None);
        check(&auth, &token).unwrap();
        // Same header and claims, another signature.
        let (signed, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert!(matches!(check(&auth, &forged), Err(AuthError::Invalid(_))));
        assert!(!remembered(&auth, &forged));
        let other = sign_raw(
            json!({"alg": "HS256", "typ": "JWT"}),
            json!({"sub": "alice", "exp": future()}),
            "another-secret-another-secret",
        );
        assert!(matches!(check(&auth, &other), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn refused_and_leeway_tokens_are_not_remembered() {
        let auth = checker(&config(None, None));
        let now = jsonwebtoken::get_current_timestamp();
        // Past its exp, within the 30 s leeway: accepted, but checked each time.
        let late = sign_raw(
            json!({"alg": "HS256", "typ": "JWT"}),
            json!({"sub": "alice", "exp": now - 10}),
            SECRET,
        );
        assert!(check(&auth, &late).is_ok());
        assert!(!remembered(&auth, &late));
        let bad_sub = issue_token(SECRET, "", 600, None, None);
        assert!(check(&auth, &bad_sub).is_err());
        assert!(!remembered(&auth, &bad_sub));
    }

    #[test]
    fn a_fractional_exp_is_read() {
        let auth = checker(&config(None, None));
        let token = sign_raw(
            json!({"alg": "HS256", "typ": "JWT"}),
            json!({"sub": "alice", "exp": future() as f64 + 0.5}),
            SECRET,
        );
        assert_eq!(check(&auth, &token).unwrap().as_str(), "alice");
        assert!(remembered(&auth, &token));
    }

    #[test]
    fn the_remembered_tokens_stay_few() {
        let auth = checker(&config(None, None));
        for i in 0..(VERIFIED_MAX * 2 + 3) {
            let token = issue_token(SECRET, &format!("user-{i}"), 600, None, None);
            check(&auth, &token).unwrap();
            assert!(auth.verified.lock().unwrap().len() <= VERIFIED_MAX);
        }
        let long = sign_raw(
            json!({"alg": "HS256", "typ": "JWT"}),
            json!({"sub": "alice", "exp": future(), "pad": "x".repeat(VERIFIED_TOKEN_MAX_BYTES)}),
            SECRET,
        );
        check(&auth, &long).unwrap();
        assert!(!remembered(&auth, &long));
    }
}

#[cfg(test)]
mod without_user_tokens {
    use super::*;

    #[test]
    fn a_function_without_jwt_secret_refuses_every_token() {
        let config = Config::from_lookup(|k| (k == "TABLE_NAME").then(|| "t".into())).unwrap();
        let auth = Authenticator::new(&config, b"signing-secret");
        let mut headers = HeaderMap::new();
        let token = issue_token("", "alice", 600, None, None);
        let value = format!("Bearer {token}").parse().unwrap();
        headers.insert(http::header::AUTHORIZATION, value);
        assert!(matches!(
            auth.authenticate(&headers),
            Err(AuthError::NoUserTokens)
        ));
    }
}
