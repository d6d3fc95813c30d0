use super::*;
use proptest::prelude::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test instant")
        .with_timezone(&Utc)
}

fn at(s: &str) -> TimeOfDay {
    s.parse().expect("test time of day")
}

fn fires(spec: &ScheduleSpec, from: &str, n: usize) -> Vec<String> {
    spec.compile()
        .expect("valid schedule")
        .preview(utc(from), n)
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .collect()
}

#[test]
fn named_schedules_table() {
    struct Case {
        name: &'static str,
        spec: ScheduleSpec,
        from: &'static str,
        want: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "daily noon, before noon fires today",
            spec: ScheduleSpec::daily(TimeOfDay::NOON),
            from: "2014-03-08T09:00:00Z",
            want: &["2014-03-08T12:00:00Z", "2014-03-09T12:00:00Z"],
        },
        Case {
            name: "daily: exactly at fire time is not 'after'",
            spec: ScheduleSpec::daily(TimeOfDay::NOON),
            from: "2014-03-08T12:00:00Z",
            want: &["2014-03-09T12:00:00Z"],
        },
        Case {
            name: "daily across Dec 31 -> Jan 1",
            spec: ScheduleSpec::daily(at("23:59")),
            from: "2014-12-31T23:59:00Z",
            want: &["2015-01-01T23:59:00Z"],
        },
        Case {
            name: "daily across Feb 28 in a leap year",
            spec: ScheduleSpec::daily(at("00:00")),
            from: "2016-02-28T00:00:00Z",
            want: &["2016-02-29T00:00:00Z", "2016-03-01T00:00:00Z"],
        },
        Case {
            name: "daily across Feb 28 in a non-leap year",
            spec: ScheduleSpec::daily(at("00:00")),
            from: "2015-02-28T00:00:00Z",
            want: &["2015-03-01T00:00:00Z"],
        },
        Case {
            name: "weekly monday from a wednesday",
            spec: ScheduleSpec::weekly(Weekday::Mon, at("06:30")),
            from: "2014-03-05T10:00:00Z",
            want: &["2014-03-10T06:30:00Z", "2014-03-17T06:30:00Z"],
        },
        Case {
            name: "weekly on the same day, later",
            spec: ScheduleSpec::weekly(Weekday::Wed, at("12:00")),
            from: "2014-03-05T10:00:00Z",
            want: &["2014-03-05T12:00:00Z", "2014-03-12T12:00:00Z"],
        },
        Case {
            name: "weekly sunday across the year end",
            spec: ScheduleSpec::weekly(Weekday::Sun, at("12:00")),
            from: "2014-12-29T00:00:00Z",
            want: &["2015-01-04T12:00:00Z"],
        },
        Case {
            name: "monthly 31 runs on the last day of short months",
            spec: ScheduleSpec::monthly(31, TimeOfDay::NOON),
            from: "2015-01-31T12:00:00Z",
            want: &[
                "2015-02-28T12:00:00Z",
                "2015-03-31T12:00:00Z",
                "2015-04-30T12:00:00Z",
                "2015-05-31T12:00:00Z",
            ],
        },
        Case {
            name: "monthly 29 in a leap year hits Feb 29",
            spec: ScheduleSpec::monthly(29, TimeOfDay::NOON),
            from: "2016-01-30T00:00:00Z",
            want: &["2016-02-29T12:00:00Z", "2016-03-29T12:00:00Z"],
        },
        Case {
            name: "monthly 29 in a non-leap year falls back to Feb 28",
            spec: ScheduleSpec::monthly(29, TimeOfDay::NOON),
            from: "2015-01-30T00:00:00Z",
            want: &["2015-02-28T12:00:00Z", "2015-03-29T12:00:00Z"],
        },
        Case {
            name: "monthly 30 in February of a leap year",
            spec: ScheduleSpec::monthly(30, TimeOfDay::NOON),
            from: "2016-02-01T00:00:00Z",
            want: &["2016-02-29T12:00:00Z", "2016-03-30T12:00:00Z"],
        },
        Case {
            name: "monthly 1 across Dec -> Jan",
            spec: ScheduleSpec::monthly(1, at("00:00")),
            from: "2014-12-01T00:00:00Z",
            want: &["2015-01-01T00:00:00Z", "2015-02-01T00:00:00Z"],
        },
        Case {
            name: "monthly in a zone east of UTC: local date is ahead",
            spec: ScheduleSpec::monthly(1, at("01:00")).with_timezone("Asia/Tokyo"),
            from: "2014-11-30T15:00:00Z",
            want: &["2014-11-30T16:00:00Z", "2014-12-31T16:00:00Z"],
        },
        Case {
            name: "daily in New York across the spring-forward gap (02:30 does not exist)",
            spec: ScheduleSpec::daily(at("02:30")).with_timezone("America/New_York"),
            from: "2021-03-13T00:00:00Z",
            // Mar 13 02:30 EST = 07:30Z; Mar 14 02:30 is in the gap -> 03:30 EDT = 07:30Z;
            // Mar 15 02:30 EDT = 06:30Z.
            want: &[
                "2021-03-13T07:30:00Z",
                "2021-03-14T07:30:00Z",
                "2021-03-15T06:30:00Z",
            ],
        },
        Case {
            name: "daily in New York across the fall-back overlap (01:30 twice) fires once",
            spec: ScheduleSpec::daily(at("01:30")).with_timezone("America/New_York"),
            from: "2021-11-06T00:00:00Z",
            // Nov 6 01:30 EDT = 05:30Z; Nov 7 first 01:30 (EDT) = 05:30Z; Nov 8 01:30 EST = 06:30Z.
            want: &[
                "2021-11-06T05:30:00Z",
                "2021-11-07T05:30:00Z",
                "2021-11-08T06:30:00Z",
            ],
        },
        Case {
            name: "weekly in Berlin keeps local time across DST",
            spec: ScheduleSpec::weekly(Weekday::Sun, at("12:00")).with_timezone("Europe/Berlin"),
            from: "2021-03-20T00:00:00Z",
            want: &["2021-03-21T11:00:00Z", "2021-03-28T10:00:00Z"],
        },
    ];
    for c in cases {
        assert_eq!(
            fires(&c.spec, c.from, c.want.len()),
            c.want,
            "case: {}",
            c.name
        );
    }
}

#[test]
fn cron_table() {
    let cases: &[(&str, Option<&str>, &str, &[&str])] = &[
        (
            "0 12 * * *",
            None,
            "2014-03-08T12:00:00Z",
            &["2014-03-09T12:00:00Z"],
        ),
        (
            "*/15 * * * *",
            None,
            "2014-03-08T12:07:00Z",
            &["2014-03-08T12:15:00Z", "2014-03-08T12:30:00Z"],
        ),
        (
            "0 0 29 2 *",
            None,
            "2015-01-01T00:00:00Z",
            &["2016-02-29T00:00:00Z", "2020-02-29T00:00:00Z"],
        ),
        (
            "0 0 L * *",
            None,
            "2015-01-31T00:00:00Z",
            &["2015-02-28T00:00:00Z", "2015-03-31T00:00:00Z"],
        ),
        (
            "30 8 * * MON-FRI",
            None,
            "2014-03-07T09:00:00Z",
            &["2014-03-10T08:30:00Z"],
        ),
        (
            "0 0 1 1 *",
            None,
            "2014-12-31T23:59:00Z",
            &["2015-01-01T00:00:00Z"],
        ),
        (
            "@daily",
            None,
            "2014-03-08T12:00:00Z",
            &["2014-03-09T00:00:00Z"],
        ),
        (
            "@monthly",
            None,
            "2014-03-08T12:00:00Z",
            &["2014-04-01T00:00:00Z"],
        ),
        (
            "0 12 * * 0",
            None,
            "2014-03-08T00:00:00Z",
            &["2014-03-09T12:00:00Z"],
        ),
        (
            "0 12 * * 7",
            None,
            "2014-03-08T00:00:00Z",
            &["2014-03-09T12:00:00Z"],
        ),
        // Vixie semantics: day-of-month OR day-of-week when both are restricted.
        (
            "0 0 13 * 5",
            None,
            "2014-06-01T00:00:00Z",
            &["2014-06-06T00:00:00Z", "2014-06-13T00:00:00Z"],
        ),
        // Fixed-time cron in a gap runs once, at the first valid time after it.
        (
            "30 2 * * *",
            Some("America/New_York"),
            "2021-03-14T00:00:00Z",
            &["2021-03-14T07:00:00Z", "2021-03-15T06:30:00Z"],
        ),
        // ... and once in an overlap.
        (
            "30 1 * * *",
            Some("America/New_York"),
            "2021-11-07T00:00:00Z",
            &["2021-11-07T05:30:00Z", "2021-11-08T06:30:00Z"],
        ),
    ];
    for (expr, tz, from, want) in cases {
        let mut spec = ScheduleSpec::cron(*expr);
        spec.timezone = tz.map(str::to_string);
        assert_eq!(
            fires(&spec, from, want.len()),
            *want,
            "cron {expr:?} tz {tz:?} from {from}"
        );
    }
}

#[test]
fn invalid_specs_name_the_field() {
    let cases: Vec<(ScheduleSpec, &str)> = vec![
        (
            ScheduleSpec {
                frequency: Frequency::Weekly,
                ..ScheduleSpec::default()
            },
            "schedule.day_of_week",
        ),
        (
            ScheduleSpec {
                frequency: Frequency::Monthly,
                ..ScheduleSpec::default()
            },
            "schedule.day_of_month",
        ),
        (
            ScheduleSpec::monthly(32, TimeOfDay::NOON),
            "schedule.day_of_month",
        ),
        (
            ScheduleSpec::monthly(0, TimeOfDay::NOON),
            "schedule.day_of_month",
        ),
        (ScheduleSpec::cron("0 0 12 * * ? 2030"), "schedule.cron"),
        (ScheduleSpec::cron("0 0 12 * * ?"), "schedule.cron"),
        (ScheduleSpec::cron("0 12 * *"), "schedule.cron"),
        (ScheduleSpec::cron("61 12 * * *"), "schedule.cron"),
        (ScheduleSpec::cron("0 0 30 2 *"), "schedule.cron"),
        (ScheduleSpec::cron("@reboot"), "schedule.cron"),
        (ScheduleSpec::cron(""), "schedule.cron"),
        (
            ScheduleSpec {
                frequency: Frequency::Cron,
                ..ScheduleSpec::default()
            },
            "schedule.cron",
        ),
        (
            ScheduleSpec {
                day_of_week: Some(Weekday::Mon),
                ..ScheduleSpec::default()
            },
            "schedule.day_of_week",
        ),
        (
            ScheduleSpec::daily(TimeOfDay::NOON).with_timezone("Mars/Olympus"),
            "schedule.timezone",
        ),
    ];
    for (spec, field) in cases {
        let err = spec
            .compile()
            .expect_err(&format!("{spec:?} must be invalid"));
        let fields: Vec<_> = err
            .field_errors()
            .into_iter()
            .map(|(f, _)| f.to_string())
            .collect();
        assert!(
            fields.contains(&field.to_string()),
            "{spec:?}: want {field}, got {err}"
        );
    }
}

#[test]
fn time_of_day_parsing() {
    assert_eq!(at("7:05").to_string(), "07:05");
    for bad in [
        "24:00", "12:60", "12", "noon", "12:5", "-1:00", "12:00:00", "",
    ] {
        assert!(
            bad.parse::<TimeOfDay>().is_err(),
            "{bad:?} must be rejected"
        );
    }
}

#[test]
fn weekday_parsing() {
    assert_eq!(parse_weekday("Monday").ok(), Some(Weekday::Mon));
    assert_eq!(parse_weekday("sun").ok(), Some(Weekday::Sun));
    assert_eq!(parse_weekday("0").ok(), Some(Weekday::Sun));
    assert_eq!(parse_weekday("7").ok(), Some(Weekday::Sun));
    assert_eq!(parse_weekday("1").ok(), Some(Weekday::Mon));
    assert!(parse_weekday("8").is_err());
    assert!(parse_weekday("someday").is_err());
}

#[test]
fn words_and_cron_lines() {
    let s = ScheduleSpec::daily(TimeOfDay::NOON)
        .compile()
        .expect("valid");
    assert_eq!(s.describe(), "daily at 12:00 UTC");
    assert_eq!(s.cron_line(), "0 12 * * *");
    let s = ScheduleSpec::weekly(Weekday::Mon, at("06:30"))
        .with_timezone("Europe/Berlin")
        .compile()
        .expect("valid");
    assert_eq!(s.describe(), "weekly on monday at 06:30 Europe/Berlin");
    assert_eq!(s.cron_line(), "CRON_TZ=Europe/Berlin 30 6 * * 1");
    let s = ScheduleSpec::monthly(31, TimeOfDay::NOON)
        .compile()
        .expect("valid");
    assert_eq!(s.cron_line(), "0 12 L * *");
}

#[test]
fn spec_serde_uses_form_names_and_defaults() {
    let spec: ScheduleSpec = serde_json::from_str(
        r#"{"frequency":"weekly","day_of_week":"Tuesday","time_of_day":"06:00"}"#,
    )
    .expect("parses");
    assert_eq!(spec, ScheduleSpec::weekly(Weekday::Tue, at("06:00")));
    let json = serde_json::to_string(&spec).expect("serializes");
    assert_eq!(
        json,
        r#"{"frequency":"weekly","day_of_week":"tuesday","time_of_day":"06:00"}"#
    );
    let empty: ScheduleSpec = serde_json::from_str("{}").expect("defaults");
    assert_eq!(empty, ScheduleSpec::daily(TimeOfDay::NOON));
    assert!(serde_json::from_str::<ScheduleSpec>(r#"{"frequency":"hourly"}"#).is_err());
    assert!(serde_json::from_str::<ScheduleSpec>(r#"{"frequncy":"daily"}"#).is_err());
    assert!(serde_json::from_str::<ScheduleSpec>(r#"{"time_of_day":"25:00"}"#).is_err());
}

fn arb_instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 1990..2100
    (631_152_000i64..4_102_444_800i64)
        .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default())
}

fn arb_tz() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        Some("Europe/Berlin"),
        Some("America/New_York"),
        Some("Australia/Lord_Howe"),
        Some("Asia/Kolkata"),
        Some("Pacific/Chatham"),
    ])
}

fn arb_named() -> impl Strategy<Value = ScheduleSpec> {
    let at = (0u8..24, 0u8..60).prop_map(|(h, m)| TimeOfDay::new(h, m).unwrap_or_default());
    let wd = (0u8..7).prop_map(|d| Weekday::try_from(d).unwrap_or(Weekday::Mon));
    (
        prop_oneof![
            at.clone().prop_map(ScheduleSpec::daily),
            (wd, at.clone()).prop_map(|(d, t)| ScheduleSpec::weekly(d, t)),
            (1u8..=31, at).prop_map(|(d, t)| ScheduleSpec::monthly(d, t)),
        ],
        arb_tz(),
    )
        .prop_map(|(s, tz)| match tz {
            Some(tz) => s.with_timezone(tz),
            None => s,
        })
}

proptest! {
    #[test]
    fn fires_strictly_increase_and_match_the_spec(spec in arb_named(), from in arb_instant()) {
        let s = spec.compile().expect("valid");
        let fires = s.preview(from, 14);
        prop_assert_eq!(fires.len(), 14);
        let mut prev = from;
        for t in &fires {
            prop_assert!(*t > prev, "{t} not after {prev}");
            prev = *t;
            let local = t.with_timezone(&s.timezone());
            match spec.frequency {
                Frequency::Weekly => prop_assert_eq!(Some(local.weekday()), spec.day_of_week),
                Frequency::Monthly => {
                    let want = spec.day_of_month.unwrap_or(1);
                    let (y, m) = (local.year(), local.month());
                    let last = month_day_clamped(y, m, 31).map(|d| d.day()).unwrap_or(31);
                    prop_assert_eq!(local.day(), u32::from(want).min(last));
                }
                _ => {}
            }
            // Local wall-clock time is the spec's, unless that time fell into a DST gap.
            let wall = (local.hour() as u8, local.minute() as u8);
            let want = (spec.time_of_day.hour(), spec.time_of_day.minute());
            if wall != want {
                let naive = NaiveDateTime::new(local.date_naive(), spec.time_of_day.naive());
                prop_assert!(s.timezone().from_local_datetime(&naive).single().is_none() && local.date_naive() == naive.date(),
                    "{t} is {wall:?} local, want {want:?}");
            }
        }
    }

    #[test]
    fn monthly_fires_exactly_once_per_calendar_month(day in 1u8..=31, from in arb_instant(), tz in arb_tz()) {
        let mut spec = ScheduleSpec::monthly(day, TimeOfDay::NOON);
        spec.timezone = tz.map(str::to_string);
        let s = spec.compile().expect("valid");
        let fires = s.preview(from, 25);
        let months: Vec<(i32, u32)> = fires.iter().map(|t| {
            let l = t.with_timezone(&s.timezone());
            (l.year(), l.month())
        }).collect();
        for w in months.windows(2) {
            prop_assert_eq!(next_month(w[0].0, w[0].1), w[1], "months {:?}", months);
        }
    }

    #[test]
    fn cron_fires_strictly_increase(min in 0u8..60, hour in 0u8..24, from in arb_instant(), tz in arb_tz()) {
        let mut spec = ScheduleSpec::cron(format!("{min} {hour} * * *"));
        spec.timezone = tz.map(str::to_string);
        let s = spec.compile().expect("valid");
        let fires = s.preview(from, 5);
        prop_assert_eq!(fires.len(), 5);
        let mut prev = from;
        for t in fires {
            prop_assert!(t > prev);
            prev = t;
        }
    }
}

use chrono::Timelike;

/// `N/step` as robfig/cron (Kubernetes), Quartz and systemd write it: from N to the field's end.
#[test]
fn start_and_step_fields_fire_from_the_start_to_the_end_of_the_field() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "0/15 * * * *",
            "2014-03-08T12:07:00Z",
            &[
                "2014-03-08T12:15:00Z",
                "2014-03-08T12:30:00Z",
                "2014-03-08T12:45:00Z",
                "2014-03-08T13:00:00Z",
            ],
        ),
        (
            "5/20 * * * *",
            "2014-03-08T12:00:00Z",
            &[
                "2014-03-08T12:05:00Z",
                "2014-03-08T12:25:00Z",
                "2014-03-08T12:45:00Z",
                "2014-03-08T13:05:00Z",
            ],
        ),
        (
            "0 1/8 * * *",
            "2014-03-08T00:00:00Z",
            &[
                "2014-03-08T01:00:00Z",
                "2014-03-08T09:00:00Z",
                "2014-03-08T17:00:00Z",
                "2014-03-09T01:00:00Z",
            ],
        ),
        (
            "0 0 21/5 * *",
            "2014-03-01T00:00:00Z",
            &[
                "2014-03-21T00:00:00Z",
                "2014-03-26T00:00:00Z",
                "2014-03-31T00:00:00Z",
                "2014-04-21T00:00:00Z",
            ],
        ),
        (
            "0 0 1 2/4 *",
            "2014-01-01T00:00:00Z",
            &[
                "2014-02-01T00:00:00Z",
                "2014-06-01T00:00:00Z",
                "2014-10-01T00:00:00Z",
                "2015-02-01T00:00:00Z",
            ],
        ),
        // Day of week 0-6: 1/2 is Monday, Wednesday, Friday (2014-03-10 was a Monday).
        (
            "0 12 * * 1/2",
            "2014-03-09T00:00:00Z",
            &[
                "2014-03-10T12:00:00Z",
                "2014-03-12T12:00:00Z",
                "2014-03-14T12:00:00Z",
                "2014-03-17T12:00:00Z",
            ],
        ),
        // In a list, next to plain values.
        (
            "0/30,7 12 * * *",
            "2014-03-08T00:00:00Z",
            &[
                "2014-03-08T12:00:00Z",
                "2014-03-08T12:07:00Z",
                "2014-03-08T12:30:00Z",
                "2014-03-09T12:00:00Z",
            ],
        ),
    ];
    for (expr, from, want) in cases {
        let got = fires(&ScheduleSpec::cron(*expr), from, want.len());
        assert_eq!(&got, want, "{expr}");
    }
}

#[test]
fn cron_descriptions_read_as_one_sentence() {
    let s = ScheduleSpec::cron("* * * * *").compile().expect("valid");
    let words = s.describe();
    assert!(!words.contains(".,"), "{words}");
    assert!(words.ends_with(", UTC)"), "{words}");
}
