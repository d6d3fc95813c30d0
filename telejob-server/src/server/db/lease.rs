//! The scheduler lease: a row with a holder, an epoch and an expiry in the database's own clock.
//!
//! A row, not an advisory lock: an advisory lock lives as long as its session, and a session
//! whose network was silently cut keeps it until TCP keepalive notices, minutes later. A row
//! expires on the database's clock whatever happens to the holder's connection, and its epoch
//! is a fencing number: every slot insert of a leader is conditional on its epoch still holding
//! the lease ([`Fence`]), so a stale leader's insert fails.

use sqlx::Row;
use telejob_core::{Error, Result};

use super::conn::{Db, Exec, Fence, Fetch};

/// The lease row as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// The holder (empty before the first leader).
    pub holder: String,
    /// Grows at each takeover.
    pub epoch: i64,
    /// Milliseconds the lease has left by the database's clock (0 or less: expired).
    pub remaining_ms: i64,
}

impl Db {
    /// The scheduler lease as it stands.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn lease(&self) -> Result<LeaseRow> {
        let q = format!(
            "SELECT holder, epoch, expires_ms - {} FROM leases WHERE name = 'scheduler'",
            self.backend.now_ms()
        );
        let r = sqlx::query(&q).one(&self.lease_pool).await?;
        Ok(LeaseRow {
            holder: r.get(0),
            epoch: r.get(1),
            remaining_ms: r.get(2),
        })
    }

    /// Takes the lease for `holder` for `ttl_ms` if it is free (expired, or released), or if
    /// it is held by `dead` (a holder known to have died, at the epoch given). Returns the new
    /// epoch.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn acquire_lease(
        &self,
        holder: &str,
        ttl_ms: i64,
        dead: Option<&Fence>,
    ) -> Result<Option<i64>> {
        let now = self.backend.now_ms();
        let q = format!(
            "UPDATE leases SET holder = $1, epoch = epoch + 1, expires_ms = {now} + $2 \
             WHERE name = 'scheduler' AND (expires_ms <= {now} OR (holder = $3 AND epoch = $4))"
        );
        let (dh, de) = dead.map_or(("", -1), |d| (d.holder.as_str(), d.epoch));
        let r = sqlx::query(&q)
            .bind(holder)
            .bind(ttl_ms)
            .bind(dh)
            .bind(de)
            .exec(&self.lease_pool)
            .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        let l = self.lease().await?;
        Ok((l.holder == holder).then_some(l.epoch))
    }

    /// Extends the lease `fence` holds by `ttl_ms` from now; `false` when it is no longer held
    /// (expired, or taken over).
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn renew_lease(&self, fence: &Fence, ttl_ms: i64) -> Result<bool> {
        let now = self.backend.now_ms();
        let q = format!(
            "UPDATE leases SET expires_ms = {now} + $1 \
             WHERE name = 'scheduler' AND holder = $2 AND epoch = $3 AND expires_ms > {now}"
        );
        let r = sqlx::query(&q)
            .bind(ttl_ms)
            .bind(&fence.holder)
            .bind(fence.epoch)
            .exec(&self.lease_pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Gives the lease up at once, so that another replica takes over without waiting for it
    /// to expire.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub async fn release_lease(&self, fence: &Fence) -> Result<()> {
        sqlx::query(
            "UPDATE leases SET expires_ms = 0 WHERE name = 'scheduler' AND holder = $1 AND epoch = $2",
        )
        .bind(&fence.holder)
        .bind(fence.epoch)
        .exec(&self.lease_pool)
        .await?;
        Ok(())
    }

    /// This database as seen by the scheduler of the leader holding `fence`: its slot inserts,
    /// cursor moves and expiries are conditional on the lease.
    pub fn fenced(&self, fence: Fence) -> Self {
        let mut d = self.clone();
        d.fence = Some(fence);
        d
    }

    /// The condition, as SQL over parameters `$a` (holder) and `$b` (epoch), that the lease is
    /// still this fence's; always true without a fence.
    pub(super) fn fence_sql(&self, a: usize, b: usize) -> String {
        self.fence_condition(&format!("${a}"), &format!("${b}"))
    }

    /// [`Db::fence_sql`] over the placeholders `holder` and `epoch` as written (a batch on
    /// SQLite uses positional `?`: see [`Db::placeholders`]).
    pub(super) fn fence_condition(&self, holder: &str, epoch: &str) -> String {
        if self.fence.is_none() {
            return "1 = 1".into();
        }
        format!(
            "EXISTS (SELECT 1 FROM leases WHERE name = 'scheduler' AND holder = {holder} AND epoch = {epoch} AND expires_ms > {}{})",
            self.backend.now_ms(),
            self.backend.for_share()
        )
    }

    /// The fence's holder and epoch, to bind to [`Db::fence_sql`]'s parameters.
    pub(super) fn fence_binds(&self) -> (String, i64) {
        self.fence
            .as_ref()
            .map_or((String::new(), 0), |f| (f.holder.clone(), f.epoch))
    }

    /// The error of a write the fence refused.
    pub(super) fn fenced_out(&self) -> Error {
        Error::fenced(
            "this server no longer holds the scheduler lease; another replica has taken over",
        )
    }

    /// Whether the fence (if any) still holds the lease.
    pub(super) async fn fence_holds(&self) -> Result<bool> {
        let Some(f) = &self.fence else {
            return Ok(true);
        };
        let l = self.lease().await?;
        Ok(l.holder == f.holder && l.epoch == f.epoch && l.remaining_ms > 0)
    }
}
