//! Validates a job spec written as JSON (as the API receives it) and prints its next fire times.
//!
//! ```sh
//! cargo run -p telejob-examples --example next_fires
//! ```

use chrono::{TimeZone, Utc};
use telejob_core::job::{JobSpec, ValidationLimits};

fn main() -> anyhow::Result<()> {
    let spec: JobSpec = serde_json::from_str(
        r#"{"name": "slowsql", "schedule": {"frequency": "monthly", "day_of_month": 31,
            "time_of_day": "06:00", "timezone": "Europe/Berlin"}, "timeout_minutes": 175}"#,
    )?;
    let job = spec.validate(&ValidationLimits::default())?;
    println!("{}: {}", job.name(), job.schedule().describe());
    println!("as cron: {}", job.schedule().cron_line());
    let from = Utc
        .with_ymd_and_hms(2015, 1, 1, 0, 0, 0)
        .single()
        .expect("valid instant");
    for t in job.schedule().preview(from, 4) {
        println!("  {t}");
    }
    Ok(())
}
