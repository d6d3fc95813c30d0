//! `telejob schedule`: preview fire times.

use std::process::ExitCode;

use chrono::SecondsFormat;
use clap::{ArgGroup, Args};
use telejob_core::schedule::{Frequency, ScheduleSpec, TimeOfDay, parse_weekday};

use crate::error::bad;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("frequency").required(true).args(["daily", "weekly", "monthly", "cron"])))]
pub struct ScheduleArgs {
    /// Every day at --at.
    #[arg(long)]
    daily: bool,
    /// Every week on DAY (monday … sunday, mon … sun, or 0–7 with 0 and 7 sunday).
    #[arg(long, value_name = "DAY")]
    weekly: Option<String>,
    /// Every month on DAY (1–31; 29–31 run on the last day of shorter months).
    #[arg(long, value_name = "DAY")]
    monthly: Option<u32>,
    /// A five-field cron expression (minute hour day-of-month month day-of-week), or @daily etc.
    #[arg(long, value_name = "EXPR", allow_hyphen_values = true)]
    cron: Option<String>,
    /// Time of day, HH:MM (24-hour). Noon by default: yesterday's data may arrive late.
    #[arg(long, value_name = "HH:MM", default_value = "12:00")]
    at: String,
    /// IANA time zone the schedule runs in (default UTC), e.g. Europe/Berlin.
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// Print fire times strictly after this RFC 3339 instant (default: now).
    #[arg(long, value_name = "INSTANT")]
    from: Option<String>,
    /// How many fire times to print.
    #[arg(long, value_name = "N", default_value_t = 5)]
    next: usize,
}

pub fn schedule(a: ScheduleArgs) -> anyhow::Result<ExitCode> {
    let at: TimeOfDay = a.at.parse().map_err(|e| bad(format!("--at: {e}")))?;
    let mut spec = ScheduleSpec::daily(at);
    if let Some(day) = &a.weekly {
        spec.frequency = Frequency::Weekly;
        spec.day_of_week = Some(parse_weekday(day).map_err(|e| bad(format!("--weekly: {e}")))?);
    }
    if let Some(day) = a.monthly {
        spec.frequency = Frequency::Monthly;
        spec.day_of_month = Some(u8::try_from(day).unwrap_or(u8::MAX));
    }
    if let Some(expr) = &a.cron {
        spec = ScheduleSpec::cron(expr.clone());
        if a.at != "12:00" {
            return Err(bad(
                "--at does not apply to --cron: put the time in the expression",
            ));
        }
    }
    spec.timezone = a.tz.clone();
    let schedule = spec.compile().map_err(|e| bad(e.to_string()))?;
    let from = crate::error::instant_or_now("--from", a.from.as_deref())?;
    eprintln!("{} — cron: {}", schedule.describe(), schedule.cron_line());
    let tz = schedule.timezone();
    for t in schedule.preview(from, a.next) {
        if tz == chrono_tz::UTC {
            say!("{}", t.to_rfc3339_opts(SecondsFormat::Secs, true));
        } else {
            say!(
                "{}  ({})",
                t.to_rfc3339_opts(SecondsFormat::Secs, true),
                t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
