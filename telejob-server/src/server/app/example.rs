//! The bundled slowsql example, scheduled every minute by `telejob serve --example`.

use chrono::Utc;
use telejob_core::job::JobSpec;
use telejob_core::schedule::ScheduleSpec;

use crate::server::app::jobs::{self, JobError};
use crate::server::app::state::AppState;
use crate::server::db::User;

const RUN_SH: &[u8] = include_bytes!("../../../../examples/slowsql/run.sh");
const QUERIES: &[u8] = include_bytes!("../../../../examples/slowsql/data/queries.csv");

/// The example's code tarball.
pub fn tarball() -> anyhow::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for (path, body, mode) in [
        ("run.sh", RUN_SH, 0o755),
        ("data/queries.csv", QUERIES, 0o644),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        h.set_mtime(Utc::now().timestamp().try_into().unwrap_or(0));
        b.append_data(&mut h, path, body)?;
    }
    Ok(b.into_inner()?.finish()?)
}

/// Creates the `slowsql` job (owner admin, every minute) with its code, unless it exists; the
/// hint it prints carries the client flags `flags` that reach this server.
pub async fn ensure(s: &AppState, flags: &str) -> anyhow::Result<()> {
    let mut spec = JobSpec::new("slowsql");
    spec.schedule = ScheduleSpec::cron("* * * * *");
    spec.timeout_minutes = 5;
    // Today is outside the bundled sample's days: read one of them, so each file has content.
    spec.env.insert("SLOWSQL_MAP_TO_SAMPLE".into(), "1".into());
    let admin = User {
        name: "admin".into(),
        is_admin: true,
    };
    if s.db.job("slowsql").await?.is_some() {
        // Made at an earlier start; the scheduler armed it when it loaded the jobs.
        return Ok(());
    }
    let code = jobs::stage_bytes(tarball()?.into(), s.max_code_bytes, &s.uploads)
        .await?
        .named("slowsql.tar.gz");
    match jobs::create(s, &admin, &spec, Some(code), &Default::default()).await {
        Ok(_) => eprintln!(
            "telejob: scheduled the example job slowsql every minute; watch it with `telejob runs list slowsql{flags}`"
        ),
        // Made meanwhile by another start on the same data.
        Err(JobError::NameTaken(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
