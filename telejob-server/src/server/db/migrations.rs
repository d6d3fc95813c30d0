//! The schema migrations, embedded in the binary: each file of `migrations/sqlite/` and
//! `migrations/postgres/` as `include_str!`, made into sqlx migrations as sqlx's own
//! `migrate!` macro makes them (version and description from the file name, the checksum of
//! the SQL), so databases migrated by earlier builds are recognised.
//!
//! Listed here rather than read by `sqlx::migrate!`: that macro needs sqlx's `macros` feature,
//! which compiles sqlx and both database drivers a second time for the host (close to a minute
//! of a first build on two cores). A test checks that each list is exactly its directory.

use std::borrow::Cow;
use std::sync::LazyLock;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The migration files, by name, in order: the same names in both directories.
macro_rules! migrations {
    ($($name:literal),* $(,)?) => {
        /// The SQLite migrations: (file name, SQL), in order.
        pub(super) const SQLITE: &[(&str, &str)] =
            &[$(($name, include_str!(concat!("../../../migrations/sqlite/", $name)))),*];
        /// The PostgreSQL migrations: (file name, SQL), in order.
        pub(super) const POSTGRES: &[(&str, &str)] =
            &[$(($name, include_str!(concat!("../../../migrations/postgres/", $name)))),*];
    };
}

migrations!(
    "0001_init.sql",
    "0002_tombstones.sql",
    "0003_secrets.sql",
    "0004_sessions.sql",
    "0005_replicas.sql",
    "0006_running_late.sql",
    "0007_workers.sql",
    "0008_deleting.sql",
    "0009_code_warnings.sql",
    "0010_code_file_name.sql",
);

/// The SQLite migrator.
pub(super) static SQLITE_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| migrator(SQLITE));
/// The PostgreSQL migrator.
pub(super) static POSTGRES_MIGRATIONS: LazyLock<Migrator> = LazyLock::new(|| migrator(POSTGRES));

/// A migrator of `files`, each named `<version>_<description>.sql`.
fn migrator(files: &[(&str, &'static str)]) -> Migrator {
    let migrations = files
        .iter()
        .map(|&(name, sql)| {
            let (version, rest) = name.split_once('_').unwrap_or((name, ""));
            let version = version
                .parse()
                .unwrap_or_else(|_| panic!("migration {name}: no version number"));
            let migration_type = MigrationType::from_filename(rest);
            let description = rest
                .trim_end_matches(migration_type.suffix())
                .replace('_', " ");
            let no_tx = sql.starts_with("-- no-transaction");
            Migration::new(
                version,
                Cow::Owned(description),
                migration_type,
                Cow::Borrowed(sql),
                no_tx,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_list_is_its_directory_and_matches_what_sqlx_reads_from_it() {
        for (dir, files) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dir);
            let mut on_disk: Vec<String> = std::fs::read_dir(&path)
                .expect("migrations directory")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            on_disk.sort();
            let listed: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
            assert_eq!(
                listed, on_disk,
                "migrations/{dir}: add each new file to the list in db/migrations.rs"
            );
            // What sqlx itself reads from the directory: same versions, descriptions, checksums.
            let read = Migrator::new(path).await.expect("sqlx reads the directory");
            let ours = migrator(files);
            let key = |m: &Migration| {
                (
                    m.version,
                    m.description.to_string(),
                    m.checksum.to_vec(),
                    m.no_tx,
                )
            };
            assert_eq!(
                ours.iter().map(key).collect::<Vec<_>>(),
                read.iter().map(key).collect::<Vec<_>>(),
                "migrations/{dir}"
            );
        }
    }
}
