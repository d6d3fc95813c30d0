//! Bearer tokens: made at random, stored as SHA-256 hashes, checked from an in-memory map.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

use crate::server::db::{Db, User};

/// A new random token (32 bytes, hex).
pub fn new_token() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    Ok(format!("tj_{}", hex::encode(b)))
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Token hashes → users, loaded from the database and kept in step with it.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<RwLock<HashMap<String, User>>>);

impl Tokens {
    /// Loads every token.
    pub async fn load(db: &Db) -> telejob_core::Result<Self> {
        let map = db.all_tokens().await?.into_iter().collect();
        Ok(Self(Arc::new(RwLock::new(map))))
    }

    /// Creates `user` if needed and a token for it; returns the token (shown once).
    pub async fn create(
        &self,
        db: &Db,
        user: &str,
        admin: bool,
        label: Option<&str>,
    ) -> anyhow::Result<String> {
        telejob_core::job::validate_user_name(user)?;
        db.ensure_user(user, admin).await?;
        let token = new_token()?;
        let h = hash(&token);
        db.add_token(user, &h, label).await?;
        let is_admin = admin || self.lookup_user(user).is_some_and(|u| u.is_admin);
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                h,
                User {
                    name: user.to_string(),
                    is_admin,
                },
            );
        Ok(token)
    }

    fn lookup_user(&self, name: &str) -> Option<User> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .find(|u| u.name == name)
            .cloned()
    }

    /// The user a token belongs to. Tokens made by another process (`telejob token create` on
    /// the server's host) are found in the database on first use.
    pub async fn check(&self, db: &Db, token: &str) -> Option<User> {
        let h = hash(token);
        if let Some(u) = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&h)
            .cloned()
        {
            return Some(u);
        }
        let user = db.token_user(&h).await.ok().flatten()?;
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(h, user.clone());
        Some(user)
    }
}
