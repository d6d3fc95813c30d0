//! Analysis workers: one row per launch; the live ones are followed by the leader.

use chrono::{DateTime, Utc};
use sqlx::Row;
use telejob_core::Result;
use telejob_core::policy::NotifySpec;

use super::conn::{Db, Exec, Fetch, db_err, parse_ts, ts};

/// A worker as the server keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerRow {
    /// Unique per launch.
    pub id: String,
    /// Its name (unique among live workers).
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// The EC2 instance, once launched.
    pub instance_id: Option<String>,
    /// The instance type.
    pub instance_type: String,
    /// The public key installed for the login user.
    pub ssh_key: String,
    /// `launching`, `pending`, `running`, `ending` or `ended`.
    pub state: String,
    /// Where to reach it.
    pub address: Option<String>,
    /// When it was launched.
    pub created_at: DateTime<Utc>,
    /// When it ends.
    pub deadline: DateTime<Utc>,
    /// The latest deadline an extension may set.
    pub max_deadline: DateTime<Utc>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Where its notifications go (else the owner's defaults).
    #[serde(skip)]
    pub notify: NotifySpec,
    /// Whether "ends in 1 hour" was sent.
    #[serde(skip)]
    pub warned: bool,
}

impl WorkerRow {
    /// Whether it is over.
    pub fn ended(&self) -> bool {
        self.state == "ended"
    }
}

const COLUMNS: &str = "id, name, owner, instance_id, instance_type, ssh_key, state, address, created_at, deadline, max_deadline, ended_at, end_reason, notify, warned";

/// A notify spec as stored: JSON, or NULL when empty.
fn notify_json(n: &NotifySpec) -> Option<String> {
    (!n.is_empty()).then(|| serde_json::to_string(n).unwrap_or_default())
}

fn row(r: &sqlx::any::AnyRow) -> Result<WorkerRow> {
    let opt_ts = |i: usize, c: &str| -> Result<Option<DateTime<Utc>>> {
        r.get::<Option<String>, _>(i)
            .map(|s| parse_ts(c, &s))
            .transpose()
    };
    Ok(WorkerRow {
        id: r.get(0),
        name: r.get(1),
        owner: r.get(2),
        instance_id: r.get(3),
        instance_type: r.get(4),
        ssh_key: r.get(5),
        state: r.get(6),
        address: r.get(7),
        created_at: parse_ts("workers.created_at", &r.get::<String, _>(8))?,
        deadline: parse_ts("workers.deadline", &r.get::<String, _>(9))?,
        max_deadline: parse_ts("workers.max_deadline", &r.get::<String, _>(10))?,
        ended_at: opt_ts(11, "workers.ended_at")?,
        end_reason: r.get(12),
        notify: r
            .get::<Option<String>, _>(13)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
        warned: r.get::<i64, _>(14) != 0,
    })
}

/// What [`Db::insert_worker_within`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerInsert {
    /// Recorded.
    Inserted,
    /// A live worker has the name.
    NameTaken,
    /// The owner has this many live workers, the cap.
    AtCap(usize),
}

impl Db {
    /// Records a worker about to launch unless its owner has `cap` live workers or a live
    /// worker has its name: one conditional insert (and, on PostgreSQL, the owner's user row
    /// locked first), so that launches racing each other never pass the cap.
    pub async fn insert_worker_within(&self, w: &WorkerRow, cap: usize) -> Result<WorkerInsert> {
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let sql = format!(
            "INSERT INTO workers ({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 \
             WHERE (SELECT COUNT(*) FROM workers WHERE owner = $3 AND state <> 'ended') < $16 ON CONFLICT DO NOTHING"
        );
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if self.backend == super::conn::Backend::Postgres {
            sqlx::query("SELECT name FROM users WHERE name = $1 FOR UPDATE")
                .bind(&w.owner)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let added = sqlx::query(&sql)
            .bind(&w.id)
            .bind(&w.name)
            .bind(&w.owner)
            .bind(&w.instance_id)
            .bind(&w.instance_type)
            .bind(&w.ssh_key)
            .bind(&w.state)
            .bind(&w.address)
            .bind(ts(w.created_at))
            .bind(ts(w.deadline))
            .bind(ts(w.max_deadline))
            .bind(w.ended_at.map(ts))
            .bind(&w.end_reason)
            .bind(notify_json(&w.notify))
            .bind(i64::from(w.warned))
            .bind(cap)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected()
            == 1;
        let live: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM workers WHERE owner = $1 AND state <> 'ended'",
        )
        .bind(&w.owner)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(match (added, live >= cap) {
            (true, _) => WorkerInsert::Inserted,
            (false, true) => WorkerInsert::AtCap(usize::try_from(live).unwrap_or(0)),
            (false, false) => WorkerInsert::NameTaken,
        })
    }

    /// Saves what changed about a worker (state, instance, address, deadline, end, warned).
    pub async fn update_worker(&self, w: &WorkerRow) -> Result<()> {
        sqlx::query(
            "UPDATE workers SET instance_id = $1, state = $2, address = $3, deadline = $4, ended_at = $5, end_reason = $6, warned = $7 WHERE id = $8",
        )
        .bind(&w.instance_id)
        .bind(&w.state)
        .bind(&w.address)
        .bind(ts(w.deadline))
        .bind(w.ended_at.map(ts))
        .bind(&w.end_reason)
        .bind(i64::from(w.warned))
        .bind(&w.id)
        .exec(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks "ends in 1 hour" sent, once: `false` when it was already.
    pub async fn claim_worker_warning(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE workers SET warned = 1 WHERE id = $1 AND warned = 0")
            .bind(id)
            .exec(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Ends a worker's row, once: `false` when it had ended already.
    pub async fn end_worker(&self, id: &str, reason: &str) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE workers SET state = 'ended', ended_at = $1, end_reason = $2 WHERE id = $3 AND state <> 'ended'",
        )
        .bind(ts(Utc::now()))
        .bind(reason)
        .bind(id)
        .exec(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The live worker named `name`, else its latest row.
    pub async fn worker(&self, name: &str) -> Result<Option<WorkerRow>> {
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM workers WHERE name = $1 ORDER BY CASE WHEN state = 'ended' THEN 1 ELSE 0 END, created_at DESC LIMIT 1"
        ))
        .bind(name)
        .opt(&self.pool)
        .await?;
        r.as_ref().map(row).transpose()
    }

    /// Workers, newest first: live ones and those ended in the last day.
    pub async fn workers(&self) -> Result<Vec<WorkerRow>> {
        let since = ts(Utc::now() - chrono::Duration::days(1));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM workers WHERE state <> 'ended' OR ended_at > $1 ORDER BY created_at DESC"
        ))
        .bind(since)
        .all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    /// A user's notification defaults.
    pub async fn user_notify(&self, user: &str) -> Result<NotifySpec> {
        let v: Option<Option<String>> =
            sqlx::query_scalar("SELECT notify FROM users WHERE name = $1")
                .bind(user)
                .opt(&self.pool)
                .await?;
        Ok(v.flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default())
    }

    /// Sets a user's notification defaults.
    pub async fn set_user_notify(&self, user: &str, notify: &NotifySpec) -> Result<()> {
        sqlx::query("UPDATE users SET notify = $1 WHERE name = $2")
            .bind(notify_json(notify))
            .bind(user)
            .exec(&self.pool)
            .await?;
        Ok(())
    }
}
