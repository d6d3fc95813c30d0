//! What the dashboard says about a job beyond its fields: save-time warnings, the running-late
//! mark, and the duration chart of its last runs (SVG drawn here, no script).

use std::collections::HashMap;

use maud::{Markup, html};
use telejob_core::advice::{Usual, Warning};
use telejob_core::run::{Run, RunState};

use crate::server::db::LateMark;

/// The warnings of a job, as a list (`#warnings`).
pub fn warnings(w: &[Warning]) -> Markup {
    html! {
        @if !w.is_empty() {
            div.card.warnings {
                h2 { "Warnings" }
                ul #warnings {
                    @for w in w { li.warning { strong { (w.field) } ": " (w.message) } }
                }
            }
        }
    }
}

fn mins(ms: u64) -> String {
    telejob_core::advice::words(std::time::Duration::from_millis(ms))
}

/// What a run's late mark says: late now, or how late it finished.
pub fn late_note(r: &Run, m: &LateMark) -> Markup {
    let ran_ms = match (r.phases.run_started, r.phases.run_ended) {
        (Some(a), Some(b)) => u64::try_from((b - a).num_milliseconds()).ok(),
        _ => None,
    };
    html! {
        span.late #late {
            @match ran_ms {
                Some(ms) => {
                    "Late: the command ran " (mins(ms)) ", " (mins(ms.saturating_sub(m.p95_ms))) " more than usual (p95 " (mins(m.p95_ms)) ")."
                }
                None => {
                    "Running late: past " (mins(m.after_ms)) " since " (m.at.format("%H:%M:%S UTC")) "; the job's usual run is " (mins(m.p95_ms)) " (p95)."
                }
            }
        }
    }
}

/// The colour of a run's bar.
fn colour(s: RunState) -> &'static str {
    match s {
        RunState::Succeeded => "#2e7d32",
        RunState::Failed | RunState::Interrupted => "#c62828",
        RunState::TimedOut => "#ef6c00",
        RunState::Missed | RunState::Cancelled => "#9e9e9e",
        _ => "#1565c0",
    }
}

/// A tick step for an axis up to `top` seconds: the smallest of 1 s, 2 s, 5 s, … 12 h that
/// needs at most five ticks.
fn tick_step(top: f64) -> f64 {
    const STEPS: [f64; 17] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        10800.0, 21600.0, 43200.0,
    ];
    STEPS
        .into_iter()
        .find(|s| top / s <= 5.0)
        .unwrap_or_else(|| (top / 5.0 / 43200.0).ceil() * 43200.0)
}

/// An axis label: `30 s`, `5 min`, `1 h 30 min`.
fn axis_label(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s.is_multiple_of(60) => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ if s.is_multiple_of(3600) => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The last runs' command durations as bars coloured by outcome, oldest on the left, on a
/// labelled time axis, with the p95 line and the timeout line drawn to scale — or, when the
/// timeout is far above every run, a marker saying it is off the scale (`#duration-chart`).
pub fn chart(
    runs: &[(Run, String)],
    usual: Option<Usual>,
    timeout_s: f64,
    late: &HashMap<String, LateMark>,
) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 180.0;
    const TOP: f64 = 14.0;
    // The time axis's labels are left of the bars.
    const LEFT: f64 = 56.0;
    let bars: Vec<(&Run, f64)> = runs
        .iter()
        .take(50)
        .rev()
        .map(|(r, _)| {
            let secs = match (
                r.phases.run_started,
                r.phases.run_ended.or(r.phases.finished),
            ) {
                (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as f64 / 1000.0,
                _ => 0.0,
            };
            (r, secs)
        })
        .collect();
    let p95 = usual.map(|u| u.p95.as_secs_f64());
    let longest = bars.iter().map(|b| b.1).fold(0.0_f64, f64::max);
    // The timeout is on the scale when a run came near it; else the scale is the runs' own.
    let top = longest.max(p95.unwrap_or(0.0) * 1.3).max(1.0);
    let wanted = if timeout_s <= top * 1.5 {
        timeout_s.max(top)
    } else {
        top
    };
    let step = tick_step(wanted);
    let scale_max = (wanted / step).ceil().max(1.0) * step;
    let timeout_on_scale = timeout_s <= scale_max;
    let ticks: Vec<f64> = (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|t| *t <= scale_max + 1e-9)
        .collect();
    let y = |v: f64| TOP + (H - TOP) * (1.0 - (v / scale_max).min(1.0));
    let slot = (W - LEFT) / 50.0;
    html! {
        figure.card {
            svg #duration-chart xmlns="http://www.w3.org/2000/svg" width=(W) height=(H + 20.0) viewBox={ "0 0 " (W) " " (H + 20.0) } role="img" aria-label="Command durations of the last runs" data-scale-max=(scale_max) {
                rect x=(LEFT) y="0" width=(W - LEFT) height=(H) fill="#fafafa" stroke="#ddd" {}
                @for t in &ticks {
                    line.tick x1=(LEFT - 4.0) x2=(W) y1=(format!("{:.1}", y(*t))) y2=(format!("{:.1}", y(*t))) stroke="#e6e6e6" {}
                    text.axis-label x=(LEFT - 6.0) y=(format!("{:.1}", y(*t) + 4.0)) font-size="11" text-anchor="end" fill="#555" data-seconds=(t) { (axis_label(*t)) }
                }
                @for (i, (r, secs)) in bars.iter().enumerate() {
                    @let h = if *secs > 0.0 { (H - y(*secs)).max(2.0) } else { 3.0 };
                    rect.bar x=(format!("{:.1}", LEFT + i as f64 * slot + 1.0)) y=(format!("{:.1}", H - h)) width=(format!("{:.1}", slot - 2.0)) height=(format!("{h:.1}")) fill=(colour(r.state)) data-state=(r.state) data-seconds=(format!("{secs:.1}")) {
                        title { (r.id) ": " (r.state) ", " (format!("{secs:.1}")) " s" @if late.contains_key(r.id.as_str()) { " (late)" } }
                    }
                    @if late.contains_key(r.id.as_str()) {
                        circle cx=(format!("{:.1}", LEFT + i as f64 * slot + slot / 2.0)) cy=(format!("{:.1}", H - h - 5.0)) r="3" fill="#ef6c00" {}
                    }
                }
                @if let Some(p) = p95 {
                    line #p95-line x1=(LEFT) x2=(W) y1=(format!("{:.1}", y(p))) y2=(format!("{:.1}", y(p))) stroke="#6a1b9a" stroke-dasharray="6 4" {}
                    text x=(LEFT + 4.0) y=(format!("{:.1}", y(p) - 3.0)) font-size="11" fill="#6a1b9a" { "p95 " (axis_label(p)) }
                }
                @if timeout_on_scale {
                    line #timeout-line x1=(LEFT) x2=(W) y1=(format!("{:.1}", y(timeout_s))) y2=(format!("{:.1}", y(timeout_s))) stroke="#c62828" stroke-width="2" data-seconds=(timeout_s) {}
                    text x=(W - 4.0) y=(format!("{:.1}", y(timeout_s) + 12.0)) font-size="11" text-anchor="end" fill="#c62828" { "timeout " (axis_label(timeout_s)) }
                } @else {
                    text #timeout-off-scale x=(W - 4.0) y="11" font-size="11" text-anchor="end" fill="#c62828" data-seconds=(timeout_s) { "timeout " (axis_label(timeout_s)) " ↑ (far above: off the scale)" }
                }
                text x="0" y=(H + 15.0) font-size="11" fill="#555" { "last " (bars.len()) " runs, oldest on the left: " }
                @for (x, label, c) in [(170.0, "succeeded", "#2e7d32"), (260.0, "failed", "#c62828"), (330.0, "timed out", "#ef6c00"), (420.0, "missed", "#9e9e9e")] {
                    rect x=(x) y=(H + 6.0) width="10" height="10" fill=(c) {}
                    text x=(x + 13.0) y=(H + 15.0) font-size="11" fill="#555" { (label) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use telejob_core::run::{Run, RunRequest, RunState};

    /// A succeeded run whose command took `secs`.
    fn ran(secs: i64) -> (Run, String) {
        let req: RunRequest = serde_json::from_value(serde_json::json!({
            "run_id": telejob_core::run::RunId::new(), "job": "j", "code": "store:x",
            "command": "true", "output_dir": "output", "timeout": 60.0,
            "scheduled_for": "2014-03-08T12:00:00Z"
        }))
        .expect("request");
        let mut r = Run::pending(&req);
        let t = chrono::Utc::now();
        r.phases.run_started = Some(t);
        r.phases.run_ended = Some(t + chrono::Duration::seconds(secs));
        r.state = RunState::Succeeded;
        (r, "scheduled".into())
    }

    #[test]
    fn the_timeout_is_drawn_to_scale_near_the_runs_and_marked_off_scale_far_above_them() {
        let near = super::chart(&[ran(40), ran(50)], None, 60.0, &Default::default()).into_string();
        assert!(
            near.contains(r#"id="timeout-line""#) && !near.contains("timeout-off-scale"),
            "{near}"
        );
        assert!(near.contains(r#"data-scale-max="60""#), "{near}");
        for label in ["0 s", "15 s", "30 s", "45 s", "1 min"] {
            assert!(
                near.contains(&format!(">{label}</text>")),
                "{label}: {near}"
            );
        }
        let far = super::chart(&[ran(14)], None, 600.0, &Default::default()).into_string();
        assert!(
            far.contains("timeout-off-scale") && !far.contains(r#"id="timeout-line""#),
            "{far}"
        );
        assert!(far.contains("timeout 10 min"), "{far}");
    }

    #[test]
    fn axis_labels_read_as_times() {
        assert_eq!(super::axis_label(0.0), "0 s");
        assert_eq!(super::axis_label(90.0), "1 min 30 s");
        assert_eq!(super::axis_label(5400.0), "1 h 30 min");
        assert_eq!(super::tick_step(14.0), 5.0);
        assert_eq!(super::tick_step(600.0), 120.0);
    }
}
