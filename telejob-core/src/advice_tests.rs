use super::*;
use crate::job::{JobSpec, ValidationLimits};
use crate::schedule::{ScheduleSpec, TimeOfDay};

use crate::testing::at as t;

fn job(schedule: ScheduleSpec) -> ValidJob {
    let mut s = JobSpec::new("advised");
    s.schedule = schedule;
    s.validate(&ValidationLimits::default()).expect("valid")
}

fn at(h: u8, m: u8) -> TimeOfDay {
    TimeOfDay::new(h, m).expect("time")
}

fn ctx() -> Context {
    Context {
        now: Some(t("2026-12-01T00:00:00Z")),
        ..Context::default()
    }
}

fn fields(w: &[Warning]) -> Vec<&str> {
    w.iter().map(|w| w.field.as_str()).collect()
}

#[test]
fn the_default_daily_noon_job_has_no_warning() {
    assert_eq!(warnings(&job(ScheduleSpec::default()), &ctx()), []);
}

#[test]
fn the_every_minute_example_warns_only_of_its_rate() {
    let w = warnings(&job(ScheduleSpec::cron("* * * * *")), &ctx());
    assert_eq!(fields(&w), ["schedule.cron"], "{w:?}");
    assert!(w[0].message.contains("1440 times a day"), "{w:?}");
    // Hourly is 24 a day: no warning.
    assert_eq!(warnings(&job(ScheduleSpec::cron("0 * * * *")), &ctx()), []);
}

#[test]
fn day_31_says_which_months_run_on_their_last_day() {
    let w = warnings(&job(ScheduleSpec::monthly(31, at(12, 0))), &ctx());
    assert_eq!(fields(&w), ["schedule.day_of_month"], "{w:?}");
    assert!(
        w[0].message
            .contains("Feb 28, Apr 30, Jun 30, Sep 30, Nov 30"),
        "{w:?}"
    );
    assert_eq!(
        warnings(&job(ScheduleSpec::monthly(28, at(12, 0))), &ctx()),
        []
    );
    let w = warnings(&job(ScheduleSpec::cron("0 12 31 * *")), &ctx());
    assert!(w[0].message.contains("skips the months"), "{w:?}");
}

#[test]
fn a_time_in_a_dst_gap_or_repeat_is_named_with_its_day() {
    let ny = |h, m| job(ScheduleSpec::daily(at(h, m)).with_timezone("America/New_York"));
    for (h, m, says, day) in [
        (2, 30, "does not exist", "2027-03-14"),
        (1, 30, "twice", "2027-11-07"),
    ] {
        let w = warnings(&ny(h, m), &ctx());
        let found = w.iter().find(|w| w.message.contains(says)).expect(says);
        assert!(found.message.contains(day), "{found:?}");
    }
    // 14:00 in New York is after noon UTC and outside both.
    assert_eq!(warnings(&ny(14, 0), &ctx()), []);
}

#[test]
fn a_daily_run_before_noon_utc_is_advised_against() {
    let w = warnings(&job(ScheduleSpec::daily(at(6, 0))), &ctx());
    assert_eq!(fields(&w), ["schedule.time_of_day"]);
    assert!(w[0].message.contains("06:00 UTC, before noon"), "{w:?}");
    // 08:00 in Tokyo is 23:00 UTC: after noon UTC.
    let tokyo = ScheduleSpec::daily(at(8, 0)).with_timezone("Asia/Tokyo");
    assert_eq!(warnings(&job(tokyo), &ctx()), []);
    // Weekly jobs are not held to it.
    let weekly = ScheduleSpec::weekly(chrono::Weekday::Mon, at(6, 0));
    assert_eq!(warnings(&job(weekly), &ctx()), []);
}

#[test]
fn the_output_directory_at_the_code_root_is_named() {
    for dir in [".", "./", "././"] {
        let mut s = JobSpec::new("advised");
        s.output_dir = dir.into();
        let j = s.validate(&ValidationLimits::default()).expect("valid");
        assert_eq!(fields(&warnings(&j, &ctx())), ["output_dir"], "{dir}");
    }
}

#[test]
fn the_timeout_is_weighed_against_the_usual_run() {
    let mins = |m: u64| Duration::from_secs(m * 60);
    assert_eq!(Usual::of(&[mins(1); 4]), None, "fewer than 5 successes");
    let usual = Usual::of(&[
        mins(10),
        mins(11),
        mins(12),
        mins(13),
        mins(14),
        mins(15),
        mins(16),
        mins(17),
        mins(18),
        mins(19),
        mins(20),
        mins(21),
        mins(22),
        mins(23),
        mins(24),
        mins(25),
        mins(26),
        mins(27),
        mins(28),
        mins(29),
        mins(300), // the 21st newest: outside the window
    ])
    .expect("20 runs");
    assert_eq!(usual.p95, mins(28), "nearest rank of the last 20");
    assert_eq!(usual.late_after(1.5, mins(5)), mins(42));
    assert_eq!(
        Usual::of(&[Duration::from_secs(60); 5])
            .expect("5")
            .late_after(1.5, mins(5)),
        mins(6),
        "at least p95 + 5 minutes"
    );
    let with = |timeout: u32| {
        let mut s = JobSpec::new("advised");
        s.timeout_minutes = timeout;
        let j = s.validate(&ValidationLimits::default()).expect("valid");
        warnings(
            &j,
            &Context {
                usual: Some(usual),
                ..ctx()
            },
        )
    };
    let short = with(20);
    assert_eq!(fields(&short), ["timeout_minutes"]);
    assert!(short[0].message.contains("shorter"), "{short:?}");
    let long = with(600);
    assert!(long[0].message.contains("more than 10 times"), "{long:?}");
    assert_eq!(with(60), []);
}

#[test]
fn the_cost_estimate_uses_p95_or_the_timeout() {
    let mut s = JobSpec::new("advised");
    s.timeout_minutes = 60;
    let j = s.validate(&ValidationLimits::default()).expect("valid");
    let price = Price {
        instance_type: "t3.medium".into(),
        usd_per_hour: Some(0.0416),
    };
    let c = |usual| Context {
        usual,
        price: Some(price.clone()),
        ..ctx()
    };
    // 30 daily runs of (60 min + 2 min boot) at $0.0416/h = $1.29 at most.
    let w = warnings(&j, &c(None));
    assert_eq!(fields(&w), ["instance_type"]);
    assert!(w[0].message.contains("at most $1.29 per month"), "{w:?}");
    // With a p95 of 10 minutes: 30 × 12 min = 6 h → $0.25.
    let usual = Usual::of(&[Duration::from_secs(600); 5]);
    let w = warnings(&j, &c(usual));
    assert!(w[0].message.contains("about $0.25 per month"), "{w:?}");
    assert!(w[0].message.contains("at most $1.29"), "{w:?}");
    let unknown = Context {
        price: Some(Price {
            instance_type: "x9.huge".into(),
            usd_per_hour: None,
        }),
        ..ctx()
    };
    assert!(
        warnings(&j, &unknown)[0]
            .message
            .contains("no price is known")
    );
}

#[test]
fn the_script_must_be_in_the_code_and_executable() {
    let code = |p: &str| match p {
        "run.sh" => Some(0o755),
        "bin/go" => Some(0o644),
        _ => None,
    };
    assert_eq!(script_warning("./run.sh --day 1", code), None);
    let missing = script_warning("./start.sh", code).expect("missing");
    assert!(
        missing.message.contains("not in the uploaded code"),
        "{missing:?}"
    );
    let plain = script_warning("bin/go", code).expect("not executable");
    assert!(plain.message.contains("not executable"), "{plain:?}");
    for on_path in ["bash run.sh", "python3 x.py", "/usr/bin/env x", "$HOME/x"] {
        assert_eq!(script_warning(on_path, code), None, "{on_path}");
    }
}
