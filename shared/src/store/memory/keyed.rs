//! The in-memory store's `Idempotency-Key` records.

use chrono::{DateTime, Utc};

use super::{Keyed, MemoryStore};
use crate::store::{Idempotency, KeyedRequest, KeyedStart, StoreError};

impl Idempotency for MemoryStore {
    async fn start_keyed(
        &self,
        request: KeyedRequest<'_>,
        lock_until: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<KeyedStart, StoreError> {
        let now = Utc::now();
        let mut keyed = self.keyed.lock().unwrap();
        let id = (request.user.clone(), request.key.to_owned());
        if let Some(k) = keyed.get(&id) {
            let live = k.expires > now && (k.answer.is_some() || k.lock_until > now);
            match (&k.answer, k.body_hash == request.body_hash) {
                _ if !live => {}
                (_, false) => return Ok(KeyedStart::Mismatch),
                (Some((status, body)), true) => {
                    return Ok(KeyedStart::Replay {
                        status: *status,
                        body: body.clone(),
                    })
                }
                (None, true) => return Ok(KeyedStart::InUse),
            }
        }
        let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let record = Keyed {
            body_hash: request.body_hash.to_owned(),
            answer: None,
            lock_until,
            expires,
        };
        keyed.insert(id, record);
        Ok(KeyedStart::Run)
    }

    async fn finish_keyed(
        &self,
        request: KeyedRequest<'_>,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        let mut keyed = self.keyed.lock().unwrap();
        if let Some(k) = keyed.get_mut(&(request.user.clone(), request.key.to_owned())) {
            k.answer = Some((status, body.to_owned()));
        }
        Ok(())
    }

    async fn release_keyed(&self, request: KeyedRequest<'_>) -> Result<(), StoreError> {
        let mut keyed = self.keyed.lock().unwrap();
        keyed.remove(&(request.user.clone(), request.key.to_owned()));
        Ok(())
    }
}
