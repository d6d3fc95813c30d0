//! Backfill planning as a pure function: which slots of a date range run again, and which
//! attempt each becomes.
//!
//! A backfill runs chosen past slots of a job's schedule, each with its own scheduled-for time.
//! The `UNIQUE (job, slot)` rule holds: a slot with no row gets its first attempt; a slot that
//! has rows (missed, failed, or succeeded and forced) gets the next attempt, numbered like
//! retries, never a second first-attempt row.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::run::RunState;
use crate::schedule::Schedule;

/// The longest range a backfill covers, in days (both ends included).
pub const MAX_BACKFILL_DAYS: i64 = 366;

/// The most slots one backfill covers (three days of an every-minute job).
pub const MAX_BACKFILL_SLOTS: usize = 5000;

/// What a slot's history says, as a backfill sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotStatus {
    /// Never ran: no row, or a row recorded `missed`.
    Missed,
    /// Its last attempt failed, timed out, was cancelled or interrupted.
    Failed,
    /// Its last attempt succeeded.
    Succeeded,
    /// An attempt is in flight.
    Running,
}

/// One stored attempt of a slot (what the store knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotAttempt {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// The attempt's number (0 for the first).
    pub attempt: u32,
    /// Its state.
    pub state: RunState,
}

/// What a backfill is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRequest {
    /// The first day, in the job's time zone.
    pub from: NaiveDate,
    /// The last day, in the job's time zone (included).
    pub to: NaiveDate,
    /// Run slots that never ran.
    pub missed: bool,
    /// Run slots whose last attempt failed.
    pub failed: bool,
    /// Run slots that succeeded too.
    pub force: bool,
    /// Only these slots of the range (the dashboard's ticked rows); `None`: every slot.
    pub slots: Option<Vec<DateTime<Utc>>>,
}

impl BackfillRequest {
    /// `from`..=`to`, missed and failed slots, not forced.
    pub fn new(from: NaiveDate, to: NaiveDate) -> Self {
        Self {
            from,
            to,
            missed: true,
            failed: true,
            force: false,
            slots: None,
        }
    }

    /// Sets which statuses run from a list such as `missed,failed`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] (field `only`) for an empty list or an unknown word.
    pub fn with_only(mut self, only: &str) -> Result<Self> {
        self.missed = false;
        self.failed = false;
        for w in only.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "missed" => self.missed = true,
                "failed" => self.failed = true,
                other => {
                    return Err(Error::invalid(
                        "only",
                        format!(
                            "{other:?} is not a slot status: use missed, failed or both (missed,failed)"
                        ),
                    ));
                }
            }
        }
        if !self.missed && !self.failed {
            return Err(Error::invalid(
                "only",
                "is empty: use missed, failed or both (missed,failed)",
            ));
        }
        Ok(self)
    }
}

/// Parses a backfill date (`YYYY-MM-DD`) for `field`.
///
/// # Errors
///
/// [`Error::InvalidJob`] naming `field` and the expected form.
pub fn parse_date(field: &str, s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
        Error::invalid(
            field,
            format!("{s:?} is not a date: use YYYY-MM-DD, a day in the job's time zone"),
        )
    })
}

/// One slot of the range and what the backfill does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedSlot {
    /// The slot (its scheduled-for time).
    pub slot: DateTime<Utc>,
    /// What its history says.
    pub status: SlotStatus,
    /// The attempt a run of it becomes (0 when the slot has no row yet).
    pub attempt: u32,
    /// Why it does not run; `None` when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip: Option<String>,
}

impl PlannedSlot {
    /// Whether the backfill runs this slot.
    pub fn runs(&self) -> bool {
        self.skip.is_none()
    }
}

/// The first instant of day `d` in `schedule`'s time zone (the end of a DST gap if midnight
/// falls into one).
fn start_of_day(schedule: &Schedule, d: NaiveDate) -> DateTime<Utc> {
    let tz = schedule.timezone();
    let mut t = d.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..48 {
        if let Some(x) = tz.from_local_datetime(&t).earliest() {
            return x.with_timezone(&Utc);
        }
        t += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The instants a backfill of `from..=to` (days in the schedule's time zone) covers: from the
/// first day's start up to the day after `to`, and never past `now`.
///
/// # Errors
///
/// [`Error::InvalidJob`] for `to` before `from`, a range over [`MAX_BACKFILL_DAYS`] days, or a
/// `from` day that has not begun.
pub fn range(
    schedule: &Schedule,
    from: NaiveDate,
    to: NaiveDate,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    if to < from {
        return Err(Error::invalid(
            "to",
            format!("{to} is before from ({from}): give the last day of the range"),
        ));
    }
    let days = (to - from).num_days() + 1;
    if days > MAX_BACKFILL_DAYS {
        return Err(Error::invalid(
            "to",
            format!(
                "the range has {days} days: a backfill covers at most {MAX_BACKFILL_DAYS}; split it"
            ),
        ));
    }
    let start = start_of_day(schedule, from);
    if start > now {
        return Err(Error::invalid(
            "from",
            format!("{from} has not begun in the job's time zone: a backfill runs past slots"),
        ));
    }
    let end = to
        .succ_opt()
        .map_or(now, |d| start_of_day(schedule, d))
        .min(now);
    Ok((start, end))
}

/// Plans a backfill: every slot of `schedule` in the request's days up to `now`, oldest first,
/// with its status from `history` (every stored attempt of those slots) and what the backfill
/// does with it.
///
/// # Errors
///
/// [`Error::InvalidJob`] naming the field: the range (see [`range`]), more than
/// [`MAX_BACKFILL_SLOTS`] slots, or chosen `slots` that are not slots of the range.
pub fn plan(
    schedule: &Schedule,
    req: &BackfillRequest,
    now: DateTime<Utc>,
    history: &[SlotAttempt],
) -> Result<Vec<PlannedSlot>> {
    let (start, end) = range(schedule, req.from, req.to, now)?;
    let mut slots = Vec::new();
    let mut t = start - chrono::Duration::seconds(1);
    while let Some(next) = schedule.next_after(t) {
        if next >= end && !(next == end && end == now) {
            break;
        }
        if slots.len() == MAX_BACKFILL_SLOTS {
            return Err(Error::invalid(
                "to",
                format!(
                    "the range holds more than {MAX_BACKFILL_SLOTS} slots of this schedule: narrow from and to"
                ),
            ));
        }
        slots.push(next);
        t = next;
    }
    if let Some(bad) = req.slots.iter().flatten().find(|c| !slots.contains(c)) {
        return Err(Error::invalid(
            "slots",
            format!(
                "{} is not a slot of this job's schedule between from and to",
                bad.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    let mut by_slot: BTreeMap<DateTime<Utc>, Vec<&SlotAttempt>> = BTreeMap::new();
    for a in history {
        by_slot.entry(a.slot).or_default().push(a);
    }
    Ok(slots
        .into_iter()
        .map(|slot| {
            let attempts = by_slot.get(&slot).map(Vec::as_slice).unwrap_or_default();
            let status = status_of(attempts);
            let attempt = attempts.iter().map(|a| a.attempt + 1).max().unwrap_or(0);
            let chosen = req.slots.as_ref().is_none_or(|c| c.contains(&slot));
            let skip = match status {
                _ if !chosen => Some("not chosen".to_string()),
                SlotStatus::Running => Some("a run of this slot is in flight".to_string()),
                SlotStatus::Succeeded if !req.force => {
                    Some("succeeded already (force runs it again)".to_string())
                }
                SlotStatus::Missed if !req.missed => Some("missed, not asked for (only)".into()),
                SlotStatus::Failed if !req.failed => Some("failed, not asked for (only)".into()),
                _ => None,
            };
            PlannedSlot {
                slot,
                status,
                attempt,
                skip,
            }
        })
        .collect())
}

/// A slot's status from its attempts: in flight if any is, else its last attempt's outcome.
fn status_of(attempts: &[&SlotAttempt]) -> SlotStatus {
    if attempts.iter().any(|a| !a.state.is_terminal()) {
        return SlotStatus::Running;
    }
    match attempts.iter().max_by_key(|a| a.attempt).map(|a| a.state) {
        None | Some(RunState::Missed) => SlotStatus::Missed,
        Some(RunState::Succeeded) => SlotStatus::Succeeded,
        Some(_) => SlotStatus::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{ScheduleSpec, TimeOfDay};

    use crate::testing::at as t;
    fn d(s: &str) -> NaiveDate {
        parse_date("from", s).expect("date")
    }
    fn daily() -> Schedule {
        ScheduleSpec::daily(TimeOfDay::new(6, 0).expect("time"))
            .compile()
            .expect("valid")
    }
    fn at(slot: &str, attempt: u32, state: RunState) -> SlotAttempt {
        SlotAttempt {
            slot: t(slot),
            attempt,
            state,
        }
    }

    #[test]
    fn a_week_runs_missed_and_failed_slots_with_their_next_attempt() {
        let history = [
            at("2026-03-02T06:00:00Z", 0, RunState::Succeeded),
            at("2026-03-03T06:00:00Z", 0, RunState::Failed),
            at("2026-03-03T06:00:00Z", 1, RunState::TimedOut),
            at("2026-03-04T06:00:00Z", 0, RunState::Missed),
            at("2026-03-06T06:00:00Z", 0, RunState::Running),
        ];
        let req = BackfillRequest::new(d("2026-03-01"), d("2026-03-07"));
        let p = plan(&daily(), &req, t("2026-03-10T00:00:00Z"), &history).expect("plan");
        let got: Vec<_> = p
            .iter()
            .map(|s| {
                (
                    s.slot.format("%d").to_string(),
                    s.status,
                    s.attempt,
                    s.runs(),
                )
            })
            .collect();
        use SlotStatus::*;
        assert_eq!(
            got,
            [
                ("01".into(), Missed, 0, true),
                ("02".into(), Succeeded, 1, false),
                ("03".into(), Failed, 2, true),
                ("04".into(), Missed, 1, true),
                ("05".into(), Missed, 0, true),
                ("06".into(), Running, 1, false),
                ("07".into(), Missed, 0, true),
            ]
        );
        let forced = BackfillRequest {
            force: true,
            ..req.clone()
        };
        let p = plan(&daily(), &forced, t("2026-03-10T00:00:00Z"), &history).expect("plan");
        assert!(p[1].runs(), "force runs a succeeded slot, as attempt 1");
        assert_eq!(p[1].attempt, 1);
        assert!(!p[5].runs(), "force never doubles a slot in flight");
    }

    #[test]
    fn only_chooses_statuses_and_slots_choose_rows() {
        let history = [at("2026-03-03T06:00:00Z", 0, RunState::Failed)];
        let now = t("2026-03-10T00:00:00Z");
        let base = BackfillRequest::new(d("2026-03-02"), d("2026-03-04"));
        let failed = base.clone().with_only("failed").expect("only");
        let runs = |r: &BackfillRequest| -> Vec<String> {
            plan(&daily(), r, now, &history)
                .expect("plan")
                .into_iter()
                .filter(PlannedSlot::runs)
                .map(|s| s.slot.format("%d").to_string())
                .collect()
        };
        assert_eq!(runs(&failed), ["03"]);
        assert_eq!(
            runs(&base.clone().with_only("missed").expect("only")),
            ["02", "04"]
        );
        assert_eq!(runs(&base), ["02", "03", "04"]);
        let chosen = BackfillRequest {
            slots: Some(vec![t("2026-03-04T06:00:00Z")]),
            ..base.clone()
        };
        assert_eq!(runs(&chosen), ["04"]);
        let foreign = BackfillRequest {
            slots: Some(vec![t("2026-03-04T07:00:00Z")]),
            ..base.clone()
        };
        let e = plan(&daily(), &foreign, now, &history).expect_err("not a slot");
        assert!(e.to_string().contains("slots"), "{e}");
        for bad in ["", "late", "missed,late"] {
            let e = base.clone().with_only(bad).expect_err(bad);
            assert!(e.to_string().contains("only"), "{e}");
        }
    }

    #[test]
    fn the_range_is_in_the_job_time_zone_inclusive_and_bounded() {
        // 23:30 in Tokyo is 14:30 UTC the same day.
        let tokyo = ScheduleSpec::daily(TimeOfDay::new(23, 30).expect("time"))
            .with_timezone("Asia/Tokyo")
            .compile()
            .expect("valid");
        let req = BackfillRequest::new(d("2026-03-02"), d("2026-03-03"));
        let p = plan(&tokyo, &req, t("2026-04-01T00:00:00Z"), &[]).expect("plan");
        let slots: Vec<_> = p.iter().map(|s| s.slot).collect();
        assert_eq!(
            slots,
            [t("2026-03-02T14:30:00Z"), t("2026-03-03T14:30:00Z")]
        );
        // Never a slot after now: the range stops at now.
        let p = plan(&daily(), &req, t("2026-03-03T05:00:00Z"), &[]).expect("plan");
        assert_eq!(p.len(), 1);
        let now = t("2027-06-01T00:00:00Z");
        let range =
            |from: &str, to: &str| plan(&daily(), &BackfillRequest::new(d(from), d(to)), now, &[]);
        for (from, to, named) in [
            ("2026-01-01", "2027-01-02", "366"),
            ("2026-03-05", "2026-03-04", "to"),
            ("2027-07-01", "2027-07-02", "from"),
        ] {
            let e = range(from, to).expect_err(from);
            assert!(e.to_string().contains(named), "{from}..{to}: {e}");
        }
        assert!(range("2026-01-01", "2026-12-31").is_ok());
        let minutely = ScheduleSpec::cron("* * * * *").compile().expect("valid");
        let day = BackfillRequest::new(d("2026-03-01"), d("2026-03-01"));
        assert_eq!(plan(&minutely, &day, now, &[]).expect("a day").len(), 1440);
        let four = BackfillRequest::new(d("2026-03-01"), d("2026-03-04"));
        let e = plan(&minutely, &four, now, &[]).expect_err("5760 slots");
        assert!(e.to_string().contains("5000"), "{e}");
        assert!(parse_date("from", "03/01/2026").is_err());
    }
}
