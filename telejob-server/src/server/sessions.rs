//! Dashboard sessions: a random id, a CSRF token per session, idle expiry. Kept in memory (a
//! restart signs everyone out).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::db::User;

/// Sessions end after this long without use.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub user: User,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    last_used: Instant,
}

/// Where session ids and CSRF tokens come from.
type RandomSource = fn(&mut [u8]) -> Result<(), getrandom::Error>;

/// The random source failed: no session can be started safely.
#[derive(Debug, thiserror::Error)]
#[error("no randomness for a session id: {0}")]
pub struct NoRandomness(getrandom::Error);

/// Sessions by id.
#[derive(Debug, Clone)]
pub struct Sessions {
    map: Arc<RwLock<HashMap<String, Session>>>,
    random: RandomSource,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::with_random(getrandom::fill)
    }
}

impl Sessions {
    fn with_random(random: RandomSource) -> Self {
        Self {
            map: Arc::default(),
            random,
        }
    }

    fn random_hex(&self, bytes: usize) -> Result<String, NoRandomness> {
        let mut b = vec![0u8; bytes];
        (self.random)(&mut b).map_err(NoRandomness)?;
        Ok(hex::encode(b))
    }

    /// Starts a session for `user`; returns its id.
    ///
    /// # Errors
    ///
    /// The system's random source failed: the sign-in must stop, never go on with a guessable id.
    pub fn start(&self, user: User) -> Result<String, NoRandomness> {
        let id = self.random_hex(32)?;
        let csrf = self.random_hex(32)?;
        let mut g = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.retain(|_, s| s.last_used.elapsed() < IDLE);
        g.insert(
            id.clone(),
            Session {
                user,
                csrf,
                last_used: Instant::now(),
            },
        );
        Ok(id)
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// The live session `id`, marked as used now.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut g = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = g.get_mut(id)?;
        if s.last_used.elapsed() >= IDLE {
            g.remove(id);
            return None;
        }
        s.last_used = Instant::now();
        Some(s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann() -> User {
        User {
            name: "ann".into(),
            is_admin: false,
        }
    }

    #[test]
    fn a_failing_random_source_stops_the_sign_in() {
        let sessions = Sessions::with_random(|_| Err(getrandom::Error::UNSUPPORTED));
        assert!(sessions.start(ann()).is_err());
        // Nothing was stored: the all-zero id of the old code does not open a session.
        assert!(sessions.get(&"00".repeat(32)).is_none());
        assert!(sessions.map.read().expect("lock").is_empty());
    }

    #[test]
    fn sessions_have_distinct_random_ids_and_csrf_tokens() {
        let sessions = Sessions::default();
        let a = sessions.start(ann()).expect("start");
        let b = sessions.start(ann()).expect("start");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let (sa, sb) = (sessions.get(&a).expect("a"), sessions.get(&b).expect("b"));
        assert_ne!(sa.csrf, sb.csrf);
        assert_ne!(sa.csrf, a);
        sessions.end(&a);
        assert!(sessions.get(&a).is_none());
    }
}
