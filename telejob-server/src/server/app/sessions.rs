//! Dashboard sessions: a random id, a CSRF token per session, idle expiry. Kept in the database
//! (only the id's SHA-256), so a restart does not sign anyone out.

use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::server::db::{Db, User};

/// Sessions end after this long without use.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);

/// A session's last use is written at most this often (not at every request).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub user: User,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

/// Where session ids and CSRF tokens come from.
type RandomSource = fn(&mut [u8]) -> Result<(), getrandom::Error>;

/// Why a session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The random source failed: no session can be started safely.
    #[error("no randomness for a session id: {0}")]
    NoRandomness(getrandom::Error),
    /// The database failed.
    #[error("cannot store the session: {0}")]
    Store(#[from] telejob_core::Error),
}

/// Sessions, in the database.
#[derive(Debug, Clone)]
pub struct Sessions {
    db: Db,
    random: RandomSource,
}

fn hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn idle() -> chrono::Duration {
    chrono::Duration::from_std(IDLE).unwrap_or(chrono::Duration::hours(12))
}

impl Sessions {
    /// Sessions stored in `db`.
    pub fn new(db: Db) -> Self {
        Self::with_random(db, getrandom::fill)
    }

    fn with_random(db: Db, random: RandomSource) -> Self {
        Self { db, random }
    }

    fn random_hex(&self, bytes: usize) -> Result<String, StartError> {
        let mut b = vec![0u8; bytes];
        (self.random)(&mut b).map_err(StartError::NoRandomness)?;
        Ok(hex::encode(b))
    }

    /// Starts a session for `user`; returns its id.
    ///
    /// # Errors
    ///
    /// The system's random source failed (the sign-in must stop, never go on with a guessable
    /// id), or the database did.
    pub async fn start(&self, user: &User) -> Result<String, StartError> {
        let id = self.random_hex(32)?;
        let csrf = self.random_hex(32)?;
        let now = Utc::now();
        self.db
            .insert_session(&hash(&id), &user.name, &csrf, now, now - idle())
            .await?;
        Ok(id)
    }

    /// Ends a session.
    pub async fn end(&self, id: &str) {
        if let Err(e) = self.db.delete_session(&hash(id)).await {
            tracing::warn!(error = %e, "cannot end a session");
        }
    }

    /// The live session `id`, marked as used now.
    pub async fn get(&self, id: &str) -> Option<Session> {
        let h = hash(id);
        let (user, csrf, last_used) = match self.db.session(&h).await {
            Ok(s) => s?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a session");
                return None;
            }
        };
        let now = Utc::now();
        if now - last_used >= idle() {
            self.end(id).await;
            return None;
        }
        if (now - last_used).to_std().unwrap_or_default() >= TOUCH_EVERY
            && let Err(e) = self.db.touch_session(&h, now).await
        {
            tracing::warn!(error = %e, "cannot record a session's use");
        }
        Some(Session { user, csrf })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db")).await.expect("db");
        db.ensure_user("ann", false).await.expect("user");
        (dir, db)
    }

    fn ann() -> User {
        User {
            name: "ann".into(),
            is_admin: false,
        }
    }

    #[tokio::test]
    async fn a_failing_random_source_stops_the_sign_in() {
        let (_d, db) = db().await;
        let sessions = Sessions::with_random(db, |_| Err(getrandom::Error::UNSUPPORTED));
        assert!(sessions.start(&ann()).await.is_err());
        // Nothing was stored: the all-zero id of the old code does not open a session.
        assert!(sessions.get(&"00".repeat(32)).await.is_none());
    }

    #[tokio::test]
    async fn sessions_have_distinct_random_ids_and_csrf_tokens_and_survive_a_restart() {
        let (_d, db) = db().await;
        let sessions = Sessions::new(db.clone());
        let a = sessions.start(&ann()).await.expect("start");
        let b = sessions.start(&ann()).await.expect("start");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        // A new process over the same database (a restart, another replica) knows them.
        let again = Sessions::new(db.clone());
        let (sa, sb) = (
            again.get(&a).await.expect("a"),
            again.get(&b).await.expect("b"),
        );
        assert_ne!(sa.csrf, sb.csrf);
        assert_ne!(sa.csrf, a);
        assert_eq!(sa.user, ann());
        // The id itself is not stored.
        assert!(db.session(&a).await.expect("read").is_none());
        again.end(&a).await;
        assert!(sessions.get(&a).await.is_none());
        assert!(sessions.get(&b).await.is_some());
    }

    #[tokio::test]
    async fn idle_sessions_expire() {
        let (_d, db) = db().await;
        let sessions = Sessions::new(db.clone());
        let a = sessions.start(&ann()).await.expect("start");
        let long_ago = Utc::now() - idle() - chrono::Duration::minutes(1);
        db.touch_session(&hash(&a), long_ago).await.expect("touch");
        assert!(sessions.get(&a).await.is_none());
        assert!(
            db.session(&hash(&a)).await.expect("read").is_none(),
            "removed"
        );
    }
}

/// How long a rejected form is kept for the page after its redirect.
const DRAFT_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// The most rejected forms kept at once (the oldest go first).
const MAX_DRAFTS: usize = 1000;

/// A rejected form, as the page after the redirect shows it again.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The session that sent it (only that session sees it).
    pub session: String,
    /// What was typed.
    pub values: std::collections::HashMap<String, String>,
    /// The problems, by field.
    pub errors: std::collections::HashMap<String, String>,
    /// A problem of no field.
    pub general: Option<String>,
    at: std::time::Instant,
}

impl Draft {
    /// A draft of `session`'s rejected form.
    pub fn new(
        session: &str,
        values: std::collections::HashMap<String, String>,
        errors: std::collections::HashMap<String, String>,
        general: Option<String>,
    ) -> Self {
        Self {
            session: hash(session),
            values,
            errors,
            general,
            at: std::time::Instant::now(),
        }
    }
}

/// Rejected forms kept a few minutes, so that a failed submit answers with a redirect to a
/// page that shows it again (Post/Redirect/Get: a reload never posts it twice). In memory, on
/// the replica that took the post; a draft another replica does not have shows an empty form.
#[derive(Debug, Default)]
pub struct Drafts(std::sync::Mutex<std::collections::HashMap<String, Draft>>);

impl Drafts {
    /// Keeps `d`; returns its id.
    pub fn keep(&self, d: Draft) -> String {
        let mut id = [0u8; 16];
        let _ = getrandom::fill(&mut id);
        let id = hex::encode(id);
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|_, d| d.at.elapsed() < DRAFT_TTL);
        while all.len() >= MAX_DRAFTS {
            let Some(oldest) = all.iter().min_by_key(|(_, d)| d.at).map(|(k, _)| k.clone()) else {
                break;
            };
            all.remove(&oldest);
        }
        all.insert(id.clone(), d);
        id
    }

    /// The draft `id` of `session`, while it is kept (a reload shows it again).
    pub fn get(&self, id: &str, session: &str) -> Option<Draft> {
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.get(id)
            .filter(|d| d.session == hash(session) && d.at.elapsed() < DRAFT_TTL)
            .cloned()
    }
}
