//! Save-time warnings: what a job's spec, code and history say before it runs. Warnings never
//! block a save; they name the field they are about and say what follows from it.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use crate::job::ValidJob;
use crate::schedule::Frequency;

/// One warning: the field it is about and what to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The spec field (`command`, `output_dir`, `schedule`, `timeout_minutes`, `instance_type`).
    pub field: String,
    /// What follows from it, in one line.
    pub message: String,
}

impl Warning {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What a job's history says about its runs: the p95 duration of its command phase over the
/// last successful runs, when there are enough of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usual {
    /// The 95th percentile of the command phase.
    pub p95: Duration,
    /// How many successful runs it is taken from.
    pub runs: usize,
}

/// At least this many successful runs before a job's usual duration is known.
pub const MIN_HISTORY: usize = 5;

/// The last this many successful runs make a job's usual duration.
pub const HISTORY_WINDOW: usize = 20;

impl Usual {
    /// The usual duration from the command phases of the last successful runs (newest first;
    /// only the first [`HISTORY_WINDOW`] count); `None` with fewer than [`MIN_HISTORY`].
    pub fn of(durations: &[Duration]) -> Option<Self> {
        let mut d: Vec<Duration> = durations.iter().take(HISTORY_WINDOW).copied().collect();
        if d.len() < MIN_HISTORY {
            return None;
        }
        d.sort();
        // Nearest rank: the smallest value with at least 95% of the values at or below it.
        let rank = (d.len() * 95).div_ceil(100).max(1);
        Some(Self {
            p95: d[rank - 1],
            runs: d.len(),
        })
    }

    /// When a run of this job is late: its command phase passed `max(factor × p95, p95 +
    /// margin)`.
    pub fn late_after(&self, factor: f64, margin: Duration) -> Duration {
        self.p95
            .mul_f64(factor.max(1.0))
            .max(self.p95.saturating_add(margin))
    }
}

/// What an EC2 job costs per hour, for the estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// The instance type the job runs on.
    pub instance_type: String,
    /// Its on-demand price in US dollars per hour; `None` when the operator's table has none.
    pub usd_per_hour: Option<f64>,
}

/// Everything the warnings look at besides the spec.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The job's usual duration, if its history says.
    pub usual: Option<Usual>,
    /// For EC2 jobs: what a machine costs.
    pub price: Option<Price>,
    /// Now (the schedule's consequences are looked at from here).
    pub now: Option<DateTime<Utc>>,
}

/// The warnings of a valid job: its output directory, its schedule's consequences, its timeout
/// against its history, and for EC2 jobs a cost estimate.
pub fn warnings(job: &ValidJob, ctx: &Context) -> Vec<Warning> {
    let now = ctx.now.unwrap_or_else(Utc::now);
    let spec = job.spec();
    let mut out = Vec::new();
    if is_code_root(&spec.output_dir) {
        out.push(Warning::new(
            "output_dir",
            format!(
                "{:?} is the code root itself: every file of the code would be published; write results to a directory such as output",
                spec.output_dir
            ),
        ));
    }
    schedule_warnings(job, now, &mut out);
    if let Some(u) = ctx.usual {
        let timeout = job.timeout();
        if timeout < u.p95 {
            out.push(Warning::new(
                "timeout_minutes",
                format!(
                    "{} is shorter than this job's usual run ({} at p95 of the last {} successes): most runs would be killed",
                    words(timeout),
                    words(u.p95),
                    u.runs
                ),
            ));
        } else if timeout > u.p95.saturating_mul(10) && timeout > Duration::from_secs(600) {
            out.push(Warning::new(
                "timeout_minutes",
                format!(
                    "{} is more than 10 times this job's usual run ({} at p95): a stuck run holds its machine that long; about {} minutes would do",
                    words(timeout),
                    words(u.p95),
                    (u.p95.as_secs() * 3).div_ceil(60).max(1)
                ),
            ));
        }
    }
    if let Some(p) = &ctx.price {
        out.push(cost(job, p, ctx.usual, now));
    }
    out
}

fn is_code_root(dir: &str) -> bool {
    std::path::Path::new(dir.trim())
        .components()
        .all(|c| matches!(c, std::path::Component::CurDir))
}

/// A duration in words: `45 s`, `12 min`, `2 h 5 min`.
pub fn words(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s.div_ceil(60))
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

fn schedule_warnings(job: &ValidJob, now: DateTime<Utc>, out: &mut Vec<Warning>) {
    let spec = &job.spec().schedule;
    let schedule = job.schedule();
    let tz = schedule.timezone();
    match spec.frequency {
        Frequency::Monthly => {
            let day = spec.day_of_month.unwrap_or(1);
            if day > 28 {
                let shorter: Vec<String> = schedule
                    .iter_after(now)
                    .take(12)
                    .map(|t| t.with_timezone(&tz).date_naive())
                    .filter(|d| d.day() != u32::from(day))
                    .map(|d| d.format("%b %-d").to_string())
                    .collect();
                if !shorter.is_empty() {
                    out.push(Warning::new(
                        "schedule.day_of_month",
                        format!(
                            "day {day}: months without it run on their last day instead: {}",
                            shorter.join(", ")
                        ),
                    ));
                }
            }
        }
        Frequency::Cron => {
            let per_day = schedule
                .iter_after(now)
                .take_while(|t| *t <= now + chrono::Duration::days(1))
                .take(100_000)
                .count();
            if per_day > 24 {
                out.push(Warning::new(
                    "schedule.cron",
                    format!(
                        "fires {per_day} times a day, more than 24: each run starts a fresh machine and publishes again; a daily or hourly schedule may do"
                    ),
                ));
            }
            if let Some(dom) = spec
                .cron
                .as_deref()
                .map(|c| c.split_whitespace().collect::<Vec<_>>())
                .filter(|f| f.len() == 5)
                .and_then(|f| f.get(2).copied())
                .and_then(|f| f.parse::<u8>().ok())
                .filter(|d| *d > 28)
            {
                out.push(Warning::new(
                    "schedule.cron",
                    format!(
                        "day-of-month {dom}: cron skips the months without that day (February{}); use the monthly frequency to run on the last day instead",
                        if dom == 31 { ", April, June, September, November" } else { "" }
                    ),
                ));
            }
        }
        Frequency::Daily | Frequency::Weekly => {}
    }
    if !matches!(spec.frequency, Frequency::Cron) {
        dst_warnings(job, now, out);
    }
    if spec.frequency == Frequency::Daily
        && let Some(next) = schedule.next_after(now)
        && next.time() < chrono::NaiveTime::from_hms_opt(12, 0, 0).unwrap_or_default()
    {
        out.push(Warning::new(
            "schedule.time_of_day",
            format!(
                "runs at {} UTC, before noon: yesterday's data may not all have arrived yet (telejob's advice: noon UTC or later)",
                next.format("%H:%M")
            ),
        ));
    }
}

/// A fixed time of day that falls into a DST gap (it does not exist that day) or repeats (it
/// exists twice) in the job's time zone within the next year.
fn dst_warnings(job: &ValidJob, now: DateTime<Utc>, out: &mut Vec<Warning>) {
    let spec = &job.spec().schedule;
    let tz = job.schedule().timezone();
    let at = spec.time_of_day.naive();
    let first = now.with_timezone(&tz).date_naive();
    let mut gap: Option<NaiveDate> = None;
    let mut repeat: Option<NaiveDate> = None;
    for d in first.iter_days().take(366) {
        match tz.from_local_datetime(&d.and_time(at)) {
            chrono::LocalResult::None if gap.is_none() => gap = Some(d),
            chrono::LocalResult::Ambiguous(..) if repeat.is_none() => repeat = Some(d),
            _ => {}
        }
    }
    let (time, zone) = (spec.time_of_day, tz.name());
    if let Some(d) = gap {
        out.push(Warning::new(
            "schedule.time_of_day",
            format!(
                "{time} does not exist in {zone} on {d} (the clocks go forward): that day the job runs an hour later by the clock; choose a time outside 01:00–03:00 to avoid it"
            ),
        ));
    }
    if let Some(d) = repeat {
        out.push(Warning::new(
            "schedule.time_of_day",
            format!(
                "{time} happens twice in {zone} on {d} (the clocks go back): the job runs once, at the first"
            ),
        ));
    }
}

/// "About $N per month, at most $M if every run hits the timeout."
fn cost(job: &ValidJob, p: &Price, usual: Option<Usual>, now: DateTime<Utc>) -> Warning {
    let Some(rate) = p.usd_per_hour else {
        return Warning::new(
            "instance_type",
            format!(
                "no price is known for {}: add it to the server's [ec2_prices] to see a cost estimate",
                p.instance_type
            ),
        );
    };
    let runs = job
        .schedule()
        .iter_after(now)
        .take_while(|t| *t <= now + chrono::Duration::days(30))
        .take(100_000)
        .count() as f64;
    // EC2 bills at least a minute, and a fresh machine takes about two to boot.
    let hours = |d: Duration| (d.as_secs_f64().max(60.0) + 120.0) / 3600.0;
    let most = runs * hours(job.timeout()) * rate;
    let message = match usual {
        Some(u) => format!(
            "{} at ${rate}/h: about ${} per month ({} runs of {} at p95), at most ${} if every run hits the timeout",
            p.instance_type,
            money(runs * hours(u.p95) * rate),
            runs,
            words(u.p95),
            money(most)
        ),
        None => format!(
            "{} at ${rate}/h: at most ${} per month ({} runs, each up to its timeout of {}); the estimate narrows once the job has run",
            p.instance_type,
            money(most),
            runs,
            words(job.timeout())
        ),
    };
    Warning::new("instance_type", message)
}

fn money(usd: f64) -> String {
    if usd < 10.0 {
        format!("{usd:.2}")
    } else {
        format!("{usd:.0}")
    }
}

/// The warning about the command's script, when its first word is a path into the code
/// (`./run.sh`, `bin/go`) that `mode_of` (the mode of a regular file of the code, `None` when
/// it is missing) says is missing or not executable. Commands that start with a program on the
/// `PATH` (`bash run.sh`, `python3 x.py`) are not checked.
pub fn script_warning(command: &str, mode_of: impl Fn(&str) -> Option<u32>) -> Option<Warning> {
    let first = command.split_whitespace().next()?;
    if !first.contains('/') || first.starts_with('/') || first.starts_with('$') {
        return None;
    }
    let path = first.trim_start_matches("./");
    match mode_of(path) {
        None => Some(Warning::new(
            "command",
            format!(
                "{first} is not in the uploaded code: the command would fail with \"No such file or directory\""
            ),
        )),
        Some(mode) if mode & 0o111 == 0 => Some(Warning::new(
            "command",
            format!(
                "{first} is not executable in the uploaded code: chmod +x it before packing, or run it as `bash {first}`"
            ),
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
#[path = "advice_tests.rs"]
mod tests;
