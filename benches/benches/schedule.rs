//! Next-fire computation for named schedules and cron expressions (goal: ≥ 1 M/s on one core).

use std::hint::black_box;

use chrono::{DateTime, Duration, TimeZone, Utc, Weekday};
use criterion::{Criterion, criterion_group, criterion_main};
use telejob_core::schedule::{ScheduleSpec, TimeOfDay};

fn instants() -> Vec<DateTime<Utc>> {
    let start = Utc
        .with_ymd_and_hms(2014, 1, 1, 0, 0, 0)
        .single()
        .expect("instant");
    (0..1024)
        .map(|i| start + Duration::minutes(i * 797))
        .collect()
}

fn bench(c: &mut Criterion) {
    let at = TimeOfDay::NOON;
    let cases = [
        ("daily_utc", ScheduleSpec::daily(at)),
        ("weekly_utc", ScheduleSpec::weekly(Weekday::Mon, at)),
        ("monthly_31_utc", ScheduleSpec::monthly(31, at)),
        (
            "daily_new_york",
            ScheduleSpec::daily(at).with_timezone("America/New_York"),
        ),
        ("cron_weekdays", ScheduleSpec::cron("30 8 * * MON-FRI")),
        ("cron_every_15m", ScheduleSpec::cron("*/15 * * * *")),
        (
            "cron_last_day_berlin",
            ScheduleSpec::cron("0 6 L * *").with_timezone("Europe/Berlin"),
        ),
    ];
    let ts = instants();
    let mut g = c.benchmark_group("next_after");
    g.throughput(criterion::Throughput::Elements(ts.len() as u64));
    for (name, spec) in cases {
        let s = spec.compile().expect("valid schedule");
        g.bench_function(name, |b| {
            b.iter(|| {
                for t in &ts {
                    black_box(s.next_after(black_box(*t)));
                }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
