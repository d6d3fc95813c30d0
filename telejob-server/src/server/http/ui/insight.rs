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

/// The last runs' command durations as bars coloured by outcome, oldest on the left, with the
/// p95 line and the timeout line (`#duration-chart`).
pub fn chart(
    runs: &[(Run, String)],
    usual: Option<Usual>,
    timeout_s: f64,
    late: &HashMap<String, LateMark>,
) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 180.0;
    const TOP: f64 = 14.0;
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
    // The scale shows the timeout only when a run came near it; the line is drawn at the top
    // edge otherwise, labelled.
    let top = longest.max(p95.unwrap_or(0.0) * 1.3).max(1.0);
    let scale_max = if timeout_s <= top * 1.5 {
        timeout_s.max(top)
    } else {
        top
    };
    let y = |v: f64| TOP + (H - TOP) * (1.0 - (v / scale_max).min(1.0));
    let step = W / 50.0;
    html! {
        figure.card {
            svg #duration-chart xmlns="http://www.w3.org/2000/svg" width=(W) height=(H + 20.0) viewBox={ "0 0 " (W) " " (H + 20.0) } role="img" aria-label="Command durations of the last runs" {
                rect x="0" y="0" width=(W) height=(H) fill="#fafafa" stroke="#ddd" {}
                @for (i, (r, secs)) in bars.iter().enumerate() {
                    @let h = if *secs > 0.0 { (H - y(*secs)).max(2.0) } else { 3.0 };
                    rect.bar x=(format!("{:.1}", i as f64 * step + 1.0)) y=(format!("{:.1}", H - h)) width=(format!("{:.1}", step - 2.0)) height=(format!("{h:.1}")) fill=(colour(r.state)) data-state=(r.state) {
                        title { (r.id) ": " (r.state) ", " (format!("{secs:.1}")) " s" @if late.contains_key(r.id.as_str()) { " (late)" } }
                    }
                    @if late.contains_key(r.id.as_str()) {
                        circle cx=(format!("{:.1}", i as f64 * step + step / 2.0)) cy=(format!("{:.1}", H - h - 5.0)) r="3" fill="#ef6c00" {}
                    }
                }
                @if let Some(p) = p95 {
                    line #p95-line x1="0" x2=(W) y1=(format!("{:.1}", y(p))) y2=(format!("{:.1}", y(p))) stroke="#6a1b9a" stroke-dasharray="6 4" {}
                    text x="4" y=(format!("{:.1}", y(p) - 3.0)) font-size="11" fill="#6a1b9a" { "p95 " (format!("{p:.0}")) " s" }
                }
                line #timeout-line x1="0" x2=(W) y1=(format!("{:.1}", y(timeout_s))) y2=(format!("{:.1}", y(timeout_s))) stroke="#c62828" stroke-width="2" {}
                text x=(W - 4.0) y=(format!("{:.1}", y(timeout_s) + 12.0)) font-size="11" text-anchor="end" fill="#c62828" { "timeout " (format!("{:.0}", timeout_s / 60.0)) " min" }
                text x="0" y=(H + 15.0) font-size="11" fill="#555" { "last " (bars.len()) " runs, oldest on the left: " }
                @for (x, label, c) in [(170.0, "succeeded", "#2e7d32"), (260.0, "failed", "#c62828"), (330.0, "timed out", "#ef6c00"), (420.0, "missed", "#9e9e9e")] {
                    rect x=(x) y=(H + 6.0) width="10" height="10" fill=(c) {}
                    text x=(x + 13.0) y=(H + 15.0) font-size="11" fill="#555" { (label) }
                }
            }
        }
    }
}
