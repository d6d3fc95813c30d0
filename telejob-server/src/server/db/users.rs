//! Users and their API tokens (stored as hashes).

use chrono::Utc;
use sqlx::Row;
use telejob_core::Result;

use super::conn::{Db, Exec, Fetch, ts};
use super::rows::User;

impl Db {
    /// Creates a user if missing; sets the admin flag when `admin` is true.
    pub async fn ensure_user(&self, name: &str, admin: bool) -> Result<()> {
        sqlx::query("INSERT INTO users (name, is_admin, created_at) VALUES ($1, $2, $3) ON CONFLICT(name) DO UPDATE SET is_admin = CASE WHEN excluded.is_admin > users.is_admin THEN excluded.is_admin ELSE users.is_admin END")
            .bind(name)
            .bind(i64::from(admin))
            .bind(ts(Utc::now()))
            .exec(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a token hash for a user.
    pub async fn add_token(&self, user: &str, hash: &str, label: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (hash, \"user\", label, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(user)
        .bind(label)
        .bind(ts(Utc::now()))
        .exec(&self.pool)
        .await?;
        Ok(())
    }

    /// Every (token hash, user).
    pub async fn all_tokens(&self) -> Result<Vec<(String, User)>> {
        let rows = sqlx::query(
            "SELECT t.hash, u.name, u.is_admin FROM tokens t JOIN users u ON u.name = t.\"user\"",
        )
        .all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<String, _>(0),
                    User {
                        name: r.get(1),
                        is_admin: (r.get::<i64, _>(2) != 0),
                    },
                )
            })
            .collect())
    }

    /// The user of a token hash.
    pub async fn token_user(&self, hash: &str) -> Result<Option<User>> {
        let r = sqlx::query("SELECT u.name, u.is_admin FROM tokens t JOIN users u ON u.name = t.\"user\" WHERE t.hash = $1")
            .bind(hash)
            .opt(&self.pool)
            .await?;
        Ok(r.map(|r| User {
            name: r.get(0),
            is_admin: (r.get::<i64, _>(1) != 0),
        }))
    }

    /// Whether any admin exists.
    pub async fn has_admin(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE is_admin = 1")
            .one(&self.pool)
            .await?;
        Ok(n > 0)
    }
}
