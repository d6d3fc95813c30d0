//! What `telejob token create` and `telejob db copy` do to a server's database from its host,
//! and the owner-only files `serve` writes.

use std::os::unix::fs::PermissionsExt;

use anyhow::Context;

use super::app;
use super::db::{self, Location};
use crate::error::bad;

/// Writes a secret file readable by its owner only.
pub fn write_secret(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{content}")?;
    Ok(())
}

/// `telejob token create`: a new token for a user, made directly in the server's database.
pub async fn create_token(
    data_dir: &std::path::Path,
    database: Option<&Location>,
    user: &str,
    admin: bool,
) -> anyhow::Result<String> {
    let at = database
        .cloned()
        .unwrap_or_else(|| Location::Sqlite(data_dir.join("telejob.db")));
    if let Location::Sqlite(p) = &at
        && !p.exists()
    {
        return Err(bad(format!(
            "--data-dir {}: no telejob database there; start `telejob serve` once first (or give --database)",
            data_dir.display()
        )));
    }
    let db = db::Db::connect(&at).await?;
    let tokens = app::tokens::Tokens::load(&db).await?;
    tokens
        .create(&db, user, admin, Some("telejob token create"))
        .await
}

/// `telejob db copy`: every table of `from` into the empty database `to`, counts checked.
pub async fn copy_database(
    from: &Location,
    to: &Location,
) -> anyhow::Result<Vec<(&'static str, i64)>> {
    if from == to {
        return Err(bad(
            "--to: the same database as --from; copy into another one",
        ));
    }
    if let Location::Sqlite(p) = from
        && !p.exists()
    {
        return Err(bad(format!("--from {from}: no such file")));
    }
    let src = db::Db::connect(from).await?;
    let dst = db::Db::connect(to).await?;
    let copied = src.copy_into(&dst).await?;
    src.close().await;
    dst.close().await;
    Ok(copied)
}
