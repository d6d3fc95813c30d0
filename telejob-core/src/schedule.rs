//! Schedules: when a job fires.
//!
//! A [`ScheduleSpec`] is what users write (the fields of the "Schedule a Job" form, or a cron
//! expression); [`ScheduleSpec::compile`] validates it into a [`Schedule`], which computes fire
//! times.
//!
//! # Semantics
//!
//! * Named schedules fire once per local day (daily), once per week on the given day (weekly) or
//!   once per calendar month (monthly), at `time_of_day` in `timezone` (UTC by default).
//! * A monthly job on day 29, 30 or 31 fires on the **last day** of months that are shorter: it
//!   never silently skips a month.
//! * Daylight saving time, for named schedules: a time of day that does not exist on a day (it falls
//!   into the gap of a spring-forward change) fires at the instant the clock would have shown that
//!   time without the change — 02:30 in a 02:00→03:00 gap fires at 03:30. A time of day that exists
//!   twice (fall back) fires once, at the first occurrence.
//! * Cron expressions have the five standard fields (minute hour day-of-month month day-of-week),
//!   names (`MON`, `JAN`), ranges, steps, lists, the nicknames `@hourly` … `@yearly`, and croner's
//!   `L`, `W`, `#` extensions. When both day-of-month and day-of-week are restricted, either
//!   matching fires the job (Vixie cron). They are evaluated in `timezone`; a fixed-time expression
//!   in a DST gap fires at the first valid time after it, and once in an overlap.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use chrono::{
    DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// How often a job fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    /// Every day at `time_of_day`.
    #[default]
    Daily,
    /// Every week on `day_of_week` at `time_of_day`.
    Weekly,
    /// Every month on `day_of_month` (or the month's last day, if shorter) at `time_of_day`.
    Monthly,
    /// Whenever the `cron` expression matches.
    Cron,
}

impl fmt::Display for Frequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Cron => "cron",
        })
    }
}

impl FromStr for Frequency {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "daily" => Ok(Self::Daily),
            "weekly" => Ok(Self::Weekly),
            "monthly" => Ok(Self::Monthly),
            "cron" => Ok(Self::Cron),
            _ => Err(Error::invalid(
                "schedule.frequency",
                format!("{s:?} is not a frequency: use daily, weekly, monthly or cron"),
            )),
        }
    }
}

/// A time of day, `HH:MM`, 24-hour clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeOfDay {
    hour: u8,
    minute: u8,
}

impl TimeOfDay {
    /// Noon, the default: yesterday's data may arrive late, so jobs run at midday.
    pub const NOON: Self = Self {
        hour: 12,
        minute: 0,
    };

    /// A time of day.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] when the hour is over 23 or the minute over 59.
    pub fn new(hour: u8, minute: u8) -> Result<Self> {
        if hour > 23 || minute > 59 {
            return Err(Error::invalid(
                "schedule.time_of_day",
                format!(
                    "{hour:02}:{minute:02} is not a time of day: use HH:MM from 00:00 to 23:59"
                ),
            ));
        }
        Ok(Self { hour, minute })
    }

    /// The hour, 0–23.
    pub fn hour(self) -> u8 {
        self.hour
    }

    /// The minute, 0–59.
    pub fn minute(self) -> u8 {
        self.minute
    }

    /// The time as a [`NaiveTime`].
    pub fn naive(self) -> NaiveTime {
        NaiveTime::from_hms_opt(self.hour.into(), self.minute.into(), 0).unwrap_or(NaiveTime::MIN)
    }
}

impl Default for TimeOfDay {
    fn default() -> Self {
        Self::NOON
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl FromStr for TimeOfDay {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "schedule.time_of_day",
                format!("{s:?} is not a time of day: use HH:MM, 24-hour clock, e.g. 12:00"),
            )
        };
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let digits = |p: &str| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || m.len() != 2 || !digits(m) {
            return Err(bad());
        }
        Self::new(h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a day of the week: `monday`, `Mon`, `MON` (any case), or 0–7 with 0 and 7 both Sunday.
///
/// # Errors
///
/// [`Error::InvalidJob`] naming `schedule.day_of_week`.
pub fn parse_weekday(s: &str) -> Result<Weekday> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u8>() {
        return match n {
            0 | 7 => Ok(Weekday::Sun),
            1..=6 => Ok(Weekday::try_from(n - 1).unwrap_or(Weekday::Mon)),
            _ => Err(Error::invalid(
                "schedule.day_of_week",
                format!(
                    "{n} is not a day of the week: use monday … sunday (or 0–7, 0 and 7 = sunday)"
                ),
            )),
        };
    }
    t.parse::<Weekday>().map_err(|_| {
        Error::invalid(
            "schedule.day_of_week",
            format!("{s:?} is not a day of the week: use monday, tuesday, … sunday"),
        )
    })
}

fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "monday",
        Weekday::Tue => "tuesday",
        Weekday::Wed => "wednesday",
        Weekday::Thu => "thursday",
        Weekday::Fri => "friday",
        Weekday::Sat => "saturday",
        Weekday::Sun => "sunday",
    }
}

mod weekday_serde {
    use super::*;

    pub fn serialize<S: Serializer>(
        d: &Option<Weekday>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(weekday_name(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Weekday>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Number(u8),
        }
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Name(s)) => parse_weekday(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(Raw::Number(n)) => parse_weekday(&n.to_string())
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A schedule as users write it: the fields of the "Schedule a Job" form plus cron and time zone.
///
/// Omitted fields take the form's defaults: daily, 12:00, UTC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// daily, weekly, monthly or cron.
    #[serde(default)]
    pub frequency: Frequency,
    /// Required for weekly schedules, and only for them.
    #[serde(
        default,
        with = "weekday_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub day_of_week: Option<Weekday>,
    /// Required for monthly schedules, and only for them: 1–31; 29–31 mean the last day of
    /// shorter months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_month: Option<u8>,
    /// When the job fires, `HH:MM` in `timezone`. Default 12:00.
    #[serde(default)]
    pub time_of_day: TimeOfDay,
    /// The cron expression, required for `frequency = cron` and only for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// An IANA time zone (`Europe/Berlin`); UTC when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

impl ScheduleSpec {
    /// Daily at `at`, UTC.
    pub fn daily(at: TimeOfDay) -> Self {
        Self {
            time_of_day: at,
            ..Self::default()
        }
    }

    /// Weekly on `day` at `at`, UTC.
    pub fn weekly(day: Weekday, at: TimeOfDay) -> Self {
        Self {
            frequency: Frequency::Weekly,
            day_of_week: Some(day),
            time_of_day: at,
            ..Self::default()
        }
    }

    /// Monthly on `day` at `at`, UTC.
    pub fn monthly(day: u8, at: TimeOfDay) -> Self {
        Self {
            frequency: Frequency::Monthly,
            day_of_month: Some(day),
            time_of_day: at,
            ..Self::default()
        }
    }

    /// A cron expression, UTC.
    pub fn cron(expr: impl Into<String>) -> Self {
        Self {
            frequency: Frequency::Cron,
            cron: Some(expr.into()),
            ..Self::default()
        }
    }

    /// Sets the time zone.
    pub fn with_timezone(mut self, tz: impl Into<String>) -> Self {
        self.timezone = Some(tz.into());
        self
    }

    /// Validates the spec into a [`Schedule`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJobs`] listing every problem, each naming its field (`schedule.…`).
    pub fn compile(&self) -> Result<Schedule> {
        let mut errors = Vec::new();
        let tz = match self.timezone.as_deref().map(str::trim) {
            None | Some("") => Tz::UTC,
            Some(name) => match name.parse::<Tz>() {
                Ok(tz) => tz,
                Err(_) => {
                    errors.push(Error::invalid(
                        "schedule.timezone",
                        format!("{name:?} is not an IANA time zone: use a name like UTC, Europe/Berlin or America/New_York"),
                    ));
                    Tz::UTC
                }
            },
        };
        let f = self.frequency;
        if self.day_of_week.is_some() && f != Frequency::Weekly {
            errors.push(Error::invalid(
                "schedule.day_of_week",
                format!("only weekly schedules take a day of the week; remove it or set frequency to weekly (frequency is {f})"),
            ));
        }
        if self.day_of_month.is_some() && f != Frequency::Monthly {
            errors.push(Error::invalid(
                "schedule.day_of_month",
                format!("only monthly schedules take a day of the month; remove it or set frequency to monthly (frequency is {f})"),
            ));
        }
        if self.cron.is_some() && f != Frequency::Cron {
            errors.push(Error::invalid(
                "schedule.cron",
                format!("a cron expression needs frequency cron; remove it or set frequency to cron (frequency is {f})"),
            ));
        }
        let at = self.time_of_day;
        let kind = match f {
            Frequency::Daily => Some(Kind::Daily { at }),
            Frequency::Weekly => match self.day_of_week {
                Some(day) => Some(Kind::Weekly { day, at }),
                None => {
                    errors.push(Error::invalid(
                        "schedule.day_of_week",
                        "a weekly schedule needs a day of the week: monday … sunday",
                    ));
                    None
                }
            },
            Frequency::Monthly => match self.day_of_month {
                Some(day @ 1..=31) => Some(Kind::Monthly { day, at }),
                Some(day) => {
                    errors.push(Error::invalid(
                        "schedule.day_of_month",
                        format!("{day} is not a day of the month: use 1–31 (29–31 run on the last day of shorter months)"),
                    ));
                    None
                }
                None => {
                    errors.push(Error::invalid(
                        "schedule.day_of_month",
                        "a monthly schedule needs a day of the month: 1–31",
                    ));
                    None
                }
            },
            Frequency::Cron => match self.cron.as_deref() {
                Some(expr) => match parse_cron_shared(expr) {
                    Ok(cron) => Some(Kind::Cron(cron)),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                },
                None => {
                    errors.push(Error::invalid(
                        "schedule.cron",
                        "a cron schedule needs an expression, e.g. \"0 12 * * *\"",
                    ));
                    None
                }
            },
        };
        match (kind, errors.is_empty()) {
            (Some(kind), true) => {
                let schedule = Schedule { kind, tz };
                // A cron expression that can never match (February 30th) is a mistake, not a job.
                if matches!(schedule.kind, Kind::Cron(_))
                    && schedule.next_after(fixed_probe_instant()).is_none()
                {
                    return Err(Error::InvalidJobs(vec![Error::invalid(
                        "schedule.cron",
                        format!(
                            "{:?} never matches a date; check the day-of-month and month fields",
                            self.cron.as_deref().unwrap_or_default()
                        ),
                    )]));
                }
                Ok(schedule)
            }
            _ => Err(Error::InvalidJobs(errors)),
        }
    }
}

fn fixed_probe_instant() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// A compiled cron expression is about 5 KB (croner keeps a bitfield per possible year), so
/// identical expressions share one compiled copy.
fn parse_cron_shared(expr: &str) -> Result<Arc<Cron>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Weak<Cron>>>> = OnceLock::new();
    let key = expr
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
        .and_then(Weak::upgrade)
    {
        return Ok(c);
    }
    let c = Arc::new(parse_cron(expr)?);
    let mut g = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Drop dead entries now and then (amortized: when the map doubles).
    if g.len() >= 64 && g.len().is_power_of_two() {
        g.retain(|_, w| w.strong_count() > 0);
    }
    g.insert(key, Arc::downgrade(&c));
    Ok(c)
}

/// Parses a five-field cron expression (or an `@` nickname) with croner.
fn parse_cron(expr: &str) -> Result<Cron> {
    let field = "schedule.cron";
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid(
            field,
            "the cron expression is empty: use five fields, e.g. \"0 12 * * *\"",
        ));
    }
    if trimmed.eq_ignore_ascii_case("@reboot") {
        return Err(Error::invalid(
            field,
            "@reboot has no fire times; use a time-based expression",
        ));
    }
    if !trimmed.starts_with('@') {
        let n = trimmed.split_whitespace().count();
        if n != 5 {
            return Err(Error::invalid(
                field,
                format!(
                    "{trimmed:?} has {n} fields; use five: minute hour day-of-month month day-of-week \
                     (telejob schedules by the minute: no seconds or year field)"
                ),
            ));
        }
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(&expand_start_step(trimmed))
        .map_err(|e| {
            Error::invalid(
                field,
                format!("{trimmed:?} is not a valid cron expression: {e}"),
            )
        })
}

/// Writes `N/step` (a start and a step, as robfig/cron behind Kubernetes, Quartz and systemd
/// accept it) as `N-MAX/step`, the form croner takes, in every field of a five-field expression.
fn expand_start_step(expr: &str) -> String {
    /// The largest value of each field: minute, hour, day of month, month, day of week (0-6, as
    /// robfig/cron: `1/2` is Monday, Wednesday, Friday).
    const MAX: [&str; 5] = ["59", "23", "31", "12", "6"];
    if expr.starts_with('@') {
        return expr.to_string();
    }
    expr.split_whitespace()
        .enumerate()
        .map(|(i, field)| {
            field
                .split(',')
                .map(|part| match (part.split_once('/'), MAX.get(i)) {
                    (Some((start, step)), Some(max))
                        if !start.is_empty() && start != "*" && !start.contains('-') =>
                    {
                        format!("{start}-{max}/{step}")
                    }
                    _ => part.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone)]
enum Kind {
    Daily { at: TimeOfDay },
    Weekly { day: Weekday, at: TimeOfDay },
    Monthly { day: u8, at: TimeOfDay },
    Cron(Arc<Cron>),
}

/// A validated schedule that computes fire times. Made by [`ScheduleSpec::compile`].
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    tz: Tz,
}

impl Schedule {
    /// The time zone the schedule is evaluated in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `after`, or `None` if the schedule never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron(cron) => cron
                .find_next_occurrence(&after.with_timezone(&self.tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Kind::Daily { at } => {
                let d0 = self.local_date(after);
                (0..3)
                    .filter_map(|i| d0.checked_add_days(Days::new(i)))
                    .map(|d| self.resolve(d, *at))
                    .find(|t| *t > after)
            }
            Kind::Weekly { day, at } => {
                let d0 = self.local_date(after);
                let ahead =
                    (7 + day.num_days_from_monday() - d0.weekday().num_days_from_monday()) % 7;
                let first = d0.checked_add_days(Days::new(ahead.into()))?;
                (0..3)
                    .filter_map(|i| first.checked_add_days(Days::new(7 * i)))
                    .map(|d| self.resolve(d, *at))
                    .find(|t| *t > after)
            }
            Kind::Monthly { day, at } => {
                let d0 = self.local_date(after);
                let (mut y, mut m) = (d0.year(), d0.month());
                // One month back covers a fire whose local date is ahead of UTC's.
                (y, m) = prev_month(y, m);
                for _ in 0..4 {
                    let d = month_day_clamped(y, m, *day)?;
                    let t = self.resolve(d, *at);
                    if t > after {
                        return Some(t);
                    }
                    (y, m) = next_month(y, m);
                }
                None
            }
        }
    }

    /// Fire times strictly after `after`, in order.
    pub fn iter_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(after), move |t| self.next_after(*t))
    }

    /// The next `n` fire times strictly after `after`.
    pub fn preview(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.iter_after(after).take(n).collect()
    }

    /// The schedule in words: `daily at 12:00 UTC`, `weekly on monday at 06:30 Europe/Berlin`.
    pub fn describe(&self) -> String {
        let tz = self.tz.name();
        match &self.kind {
            Kind::Daily { at } => format!("daily at {at} {tz}"),
            Kind::Weekly { day, at } => format!("weekly on {} at {at} {tz}", weekday_name(*day)),
            Kind::Monthly { day, at } if *day > 28 => {
                format!("monthly on day {day} (or the last day of shorter months) at {at} {tz}")
            }
            Kind::Monthly { day, at } => format!("monthly on day {day} at {at} {tz}"),
            // croner's sentences end with a full stop; this one goes on.
            Kind::Cron(c) => format!(
                "cron \"{}\" ({}, {tz})",
                c.pattern,
                c.describe().trim_end_matches('.')
            ),
        }
    }

    /// The schedule as a crontab line (with `CRON_TZ=` when not UTC). Monthly schedules on day
    /// 29–31 are written with croner's `L` (last day) where that is exact, otherwise with a note.
    pub fn cron_line(&self) -> String {
        let line = match &self.kind {
            Kind::Daily { at } => format!("{} {} * * *", at.minute, at.hour),
            Kind::Weekly { day, at } => {
                format!(
                    "{} {} * * {}",
                    at.minute,
                    at.hour,
                    day.num_days_from_sunday()
                )
            }
            Kind::Monthly { day: 31, at } => format!("{} {} L * *", at.minute, at.hour),
            Kind::Monthly { day, at } if *day > 28 => format!(
                "{} {} {day} * *   # and the last day of months shorter than {day} days",
                at.minute, at.hour
            ),
            Kind::Monthly { day, at } => format!("{} {} {day} * *", at.minute, at.hour),
            Kind::Cron(c) => c.pattern.to_string(),
        };
        if self.tz == Tz::UTC {
            line
        } else {
            format!("CRON_TZ={} {line}", self.tz.name())
        }
    }

    fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    /// The instant of local `date` at `at`, by the DST rules in the module docs.
    fn resolve(&self, date: NaiveDate, at: TimeOfDay) -> DateTime<Utc> {
        let local = NaiveDateTime::new(date, at.naive());
        match self.tz.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            chrono::LocalResult::None => {
                // In a gap: use the offset in force the day before (before the change).
                let before = local - chrono::Duration::days(1);
                let offset = self
                    .tz
                    .from_local_datetime(&before)
                    .earliest()
                    .map(|t| chrono::Offset::fix(t.offset()).local_minus_utc())
                    .unwrap_or(0);
                (local - chrono::Duration::seconds(offset.into())).and_utc()
            }
        }
    }
}

fn next_month(y: i32, m: u32) -> (i32, u32) {
    if m == 12 { (y + 1, 1) } else { (y, m + 1) }
}

fn prev_month(y: i32, m: u32) -> (i32, u32) {
    if m == 1 { (y - 1, 12) } else { (y, m - 1) }
}

/// `day` of month `m`, or the month's last day when it is shorter.
fn month_day_clamped(y: i32, m: u32, day: u8) -> Option<NaiveDate> {
    let (ny, nm) = next_month(y, m);
    let last = NaiveDate::from_ymd_opt(ny, nm, 1)?.pred_opt()?.day();
    NaiveDate::from_ymd_opt(y, m, u32::from(day).min(last))
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
