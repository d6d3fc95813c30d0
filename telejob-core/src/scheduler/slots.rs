//! What to do with the slots that came due: the missed-slot policy as a pure function.

use chrono::{DateTime, Utc};

use crate::policy::MissedPolicy;
use crate::schedule::Schedule;

/// A slot later than this after its time counts as missed (downtime), not merely late.
pub const ON_TIME_GRACE: chrono::Duration = chrono::Duration::minutes(10);

/// At most this many missed slots are recorded one by one after a long downtime.
pub const MAX_RECORDED_MISSES: usize = 1000;

/// What becomes of one due slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotAction {
    /// Run it.
    Run(DateTime<Utc>),
    /// Record it as missed.
    Miss(DateTime<Utc>),
}

/// The due slots after `cursor` (the last slot handled) up to `now`, and no later than `end`,
/// with what to do with each, oldest first. Slots that are on time always run; late ones follow
/// `policy`. Returns the actions, the new cursor and the first slot after `now` (`None` when the
/// schedule ends first): the next fire, found on the way.
pub fn plan_due(
    schedule: &Schedule,
    cursor: DateTime<Utc>,
    now: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    policy: MissedPolicy,
    catch_up_limit: u32,
) -> (Vec<SlotAction>, DateTime<Utc>, Option<DateTime<Utc>>) {
    let mut due: Vec<DateTime<Utc>> = Vec::new();
    let mut last = cursor;
    let mut dropped = 0usize;
    let mut next = None;
    for t in schedule.iter_after(cursor) {
        if end.is_some_and(|e| t > e) {
            break;
        }
        if t > now {
            next = Some(t);
            break;
        }
        last = t;
        due.push(t);
        // Bound memory after a very long downtime of a frequent job.
        if due.len() > 2 * MAX_RECORDED_MISSES {
            let cut = due.len() - MAX_RECORDED_MISSES;
            due.drain(..cut);
            dropped += cut;
        }
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "more missed slots than are recorded one by one; the oldest are not recorded"
        );
    }
    let runnable = |t: &DateTime<Utc>| now - *t <= ON_TIME_GRACE;
    let n = due.len();
    let keep = match policy {
        MissedPolicy::Skip => 0,
        MissedPolicy::Latest => 1,
        MissedPolicy::CatchUp => catch_up_limit as usize,
    };
    let actions = due
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            if runnable(&t) || i + keep >= n {
                SlotAction::Run(t)
            } else {
                SlotAction::Miss(t)
            }
        })
        .collect();
    (actions, last, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{ScheduleSpec, TimeOfDay};

    /// Daily at noon, UTC.
    fn noon() -> crate::schedule::Schedule {
        ScheduleSpec::daily(TimeOfDay::NOON)
            .compile()
            .expect("valid")
    }

    use crate::testing::at as t;

    #[test]
    fn policies_table() {
        let daily = noon();
        let cursor = t("2014-03-01T12:00:00Z");
        let now = t("2014-03-05T13:00:00Z"); // down 4 days: slots 2, 3, 4, 5 due; 5 is 1 h late
        let run = |d: &str| SlotAction::Run(t(&format!("2014-03-{d}T12:00:00Z")));
        let miss = |d: &str| SlotAction::Miss(t(&format!("2014-03-{d}T12:00:00Z")));
        let cases = [
            (
                MissedPolicy::Skip,
                10,
                vec![miss("02"), miss("03"), miss("04"), miss("05")],
            ),
            (
                MissedPolicy::Latest,
                10,
                vec![miss("02"), miss("03"), miss("04"), run("05")],
            ),
            (
                MissedPolicy::CatchUp,
                2,
                vec![miss("02"), miss("03"), run("04"), run("05")],
            ),
            (
                MissedPolicy::CatchUp,
                10,
                vec![run("02"), run("03"), run("04"), run("05")],
            ),
        ];
        for (policy, limit, want) in cases {
            let (actions, cursor2, _) = plan_due(&daily, cursor, now, None, policy, limit);
            assert_eq!(actions, want, "{policy:?} limit {limit}");
            assert_eq!(cursor2, t("2014-03-05T12:00:00Z"));
        }
    }

    #[test]
    fn on_time_slots_always_run_and_nothing_runs_twice() {
        let daily = noon();
        let due = |cursor, now| plan_due(&daily, cursor, now, None, MissedPolicy::Skip, 1);
        let (a, c, _) = due(t("2014-03-04T12:00:00Z"), t("2014-03-05T12:00:01Z"));
        assert_eq!(a, vec![SlotAction::Run(t("2014-03-05T12:00:00Z"))]);
        let (a, _, _) = due(c, t("2014-03-05T12:30:00Z"));
        assert!(a.is_empty(), "the cursor makes a slot due once");
    }

    #[test]
    fn the_end_date_bounds_due_slots() {
        let daily = noon();
        let (a, _, _) = plan_due(
            &daily,
            t("2014-03-01T12:00:00Z"),
            t("2014-03-09T12:00:00Z"),
            Some(t("2014-03-03T00:00:00Z")),
            MissedPolicy::CatchUp,
            100,
        );
        assert_eq!(a, vec![SlotAction::Run(t("2014-03-02T12:00:00Z"))]);
    }

    #[test]
    fn a_year_of_minutely_downtime_stays_bounded() {
        let minutely = ScheduleSpec::cron("* * * * *").compile().expect("valid");
        let (a, _, _) = plan_due(
            &minutely,
            t("2014-01-01T00:00:00Z"),
            t("2014-03-01T00:00:00Z"),
            None,
            MissedPolicy::Latest,
            1,
        );
        assert!(a.len() <= 2 * MAX_RECORDED_MISSES, "{}", a.len());
        assert_eq!(a.last(), Some(&SlotAction::Run(t("2014-03-01T00:00:00Z"))));
    }
}
