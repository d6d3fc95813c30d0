//! `telejob db copy`: every table of one database into another (SQLite into PostgreSQL), in one
//! transaction, with the row counts checked afterwards.

use futures::TryStreamExt;
use sqlx::Row;
use telejob_core::{Error, Result};

use super::conn::{Db, Fetch, db_err};

/// How a column's values cross.
#[derive(Debug, Clone, Copy)]
enum Col {
    Text,
    OptText,
    Int,
    Blob,
}

/// The tables copied, parents before children, with their columns. The lease and the change
/// feed are not copied: they belong to the running servers of each database.
const TABLES: &[(&str, &[(&str, Col)])] = &[
    (
        "users",
        &[
            ("name", Col::Text),
            ("is_admin", Col::Int),
            ("created_at", Col::Text),
            ("notify", Col::OptText),
        ],
    ),
    (
        "workers",
        &[
            ("id", Col::Text),
            ("name", Col::Text),
            ("owner", Col::Text),
            ("instance_id", Col::OptText),
            ("instance_type", Col::Text),
            ("ssh_key", Col::Text),
            ("state", Col::Text),
            ("address", Col::OptText),
            ("created_at", Col::Text),
            ("deadline", Col::Text),
            ("max_deadline", Col::Text),
            ("ended_at", Col::OptText),
            ("end_reason", Col::OptText),
            ("notify", Col::OptText),
            ("warned", Col::Int),
        ],
    ),
    (
        "tokens",
        &[
            ("hash", Col::Text),
            ("\"user\"", Col::Text),
            ("label", Col::OptText),
            ("created_at", Col::Text),
        ],
    ),
    (
        "jobs",
        &[
            ("name", Col::Text),
            ("owner", Col::Text),
            ("spec", Col::Text),
            ("code_key", Col::OptText),
            ("paused", Col::Int),
            ("expired", Col::Int),
            ("cursor", Col::Text),
            ("created_at", Col::Text),
            ("updated_at", Col::Text),
            ("deleting_since", Col::OptText),
            ("code_warnings", Col::OptText),
        ],
    ),
    (
        "code_versions",
        &[
            ("job", Col::Text),
            ("sha256", Col::Text),
            ("key", Col::Text),
            ("size", Col::Int),
            ("uploaded_by", Col::Text),
            ("uploaded_at", Col::Text),
            ("file_name", Col::OptText),
        ],
    ),
    (
        "runs",
        &[
            ("id", Col::Text),
            ("job", Col::Text),
            ("slot_key", Col::Text),
            ("trigger", Col::Text),
            ("attempt", Col::Int),
            ("scheduled_for", Col::Text),
            ("state", Col::Text),
            ("record", Col::Text),
            ("created_at", Col::Text),
            ("epoch", Col::Int),
            ("late", Col::OptText),
        ],
    ),
    (
        "notifications",
        &[
            ("key", Col::Text),
            ("job", Col::Text),
            ("kind", Col::Text),
            ("created_at", Col::Text),
            ("sent_at", Col::OptText),
            ("attempts", Col::Int),
            ("last_error", Col::OptText),
        ],
    ),
    (
        "tombstones",
        &[
            ("name", Col::Text),
            ("owner", Col::Text),
            ("deleted_at", Col::Text),
            ("free_after", Col::OptText),
        ],
    ),
    (
        "job_secrets",
        &[
            ("job", Col::Text),
            ("name", Col::Text),
            ("nonce", Col::Blob),
            ("ciphertext", Col::Blob),
            ("set_at", Col::Text),
        ],
    ),
    (
        "sessions",
        &[
            ("id_hash", Col::Text),
            ("\"user\"", Col::Text),
            ("csrf", Col::Text),
            ("last_used", Col::Text),
        ],
    ),
    ("settings", &[("name", Col::Text), ("value", Col::Text)]),
];

#[cfg(test)]
/// Tables that belong to a running database and are never copied.
pub const NOT_COPIED: &[&str] = &["leases", "job_changes", "_sqlx_migrations"];

#[cfg(test)]
/// The names of the tables [`Db::copy_into`] copies.
pub fn copied_tables() -> Vec<&'static str> {
    TABLES.iter().map(|(t, _)| *t).collect()
}

impl Db {
    /// Rows per table.
    async fn count(&self, table: &str) -> Result<i64> {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .one(&self.pool)
            .await
    }

    #[cfg(test)]
    /// The names of this database's own tables.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn table_names(&self) -> Result<Vec<String>> {
        let q = match self.backend {
            super::Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            super::Backend::Postgres => {
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name"
            }
        };
        sqlx::query_scalar(q).all(&self.pool).await
    }

    /// Copies every table into `to`, which must hold no users or jobs yet, in one transaction;
    /// then checks that each table has as many rows on both sides. Returns (table, rows).
    ///
    /// # Errors
    ///
    /// A target that is not empty, a row that does not fit, or counts that differ.
    pub async fn copy_into(&self, to: &Db) -> Result<Vec<(&'static str, i64)>> {
        for t in ["users", "jobs", "runs"] {
            if to.count(t).await? > 0 {
                return Err(Error::persistence(
                    "copy",
                    format!(
                        "--to: the target database has {t} already; copy into an empty database"
                    ),
                    false,
                ));
            }
        }
        let mut tx = to.pool.begin().await.map_err(db_err)?;
        // Rows made by the target's own first start (settings) give way to the source's.
        sqlx::query("DELETE FROM settings")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for (table, cols) in TABLES {
            let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
            let select = format!("SELECT {} FROM {table}", names.join(", "));
            let params: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
            let insert = format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                params.join(", ")
            );
            let mut rows = sqlx::query(&select).fetch(&self.pool);
            while let Some(r) = rows.try_next().await.map_err(db_err)? {
                let mut q = sqlx::query(&insert);
                for (i, (_, c)) in cols.iter().enumerate() {
                    q = match c {
                        Col::Text => q.bind(r.try_get::<String, _>(i).map_err(db_err)?),
                        Col::OptText => q.bind(r.try_get::<Option<String>, _>(i).map_err(db_err)?),
                        Col::Int => q.bind(r.try_get::<i64, _>(i).map_err(db_err)?),
                        Col::Blob => q.bind(r.try_get::<Vec<u8>, _>(i).map_err(db_err)?),
                    };
                }
                q.execute(&mut *tx).await.map_err(|e| {
                    Error::persistence("copy", format!("table {table}: {e}"), false)
                })?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        let mut out = Vec::new();
        for (table, _) in TABLES {
            let (a, b) = (self.count(table).await?, to.count(table).await?);
            if a != b {
                return Err(Error::persistence(
                    "copy",
                    format!("table {table}: {a} rows in the source but {b} in the target"),
                    false,
                ));
            }
            out.push((*table, b));
        }
        Ok(out)
    }
}
