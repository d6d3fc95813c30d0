//! A run's page: its state and times, what it published, and its log (streamed while it runs).

use maud::{Markup, html};
use telejob_core::run::Run;

use super::pages::layout;

/// What a run's page shows.
#[derive(Debug)]
pub struct RunPage<'a> {
    /// The run.
    pub run: &'a Run,
    /// Why it ran.
    pub trigger: &'a str,
    /// Its log, for the job's owners and maintainers.
    pub log: Option<&'a str>,
    /// The log's length in bytes as stored (where following it goes on from).
    pub log_bytes: usize,
    /// Whether its output is public.
    pub public_data: bool,
    /// Whether the viewer may replay it.
    pub manage: bool,
    /// Its late mark.
    pub late: Option<&'a crate::server::db::LateMark>,
    /// Where it waits for a run slot, if it does (on the leader).
    pub queue: Option<telejob_core::scheduler::QueuePosition>,
}

/// When `t` was, as every page shows times: `2026-12-03 17:24:38 UTC`.
pub fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".into())
}

/// A run's state and times: the part of its page that changes while it runs.
pub fn run_summary(
    r: &Run,
    trigger: &str,
    late: Option<&crate::server::db::LateMark>,
    queue: Option<telejob_core::scheduler::QueuePosition>,
) -> Markup {
    html! {
        table {
            tr { th { "State" } td #run-state class={ "state-" (r.state) } { (r.state) } }
            @if let Some(q) = queue {
                tr { th { "Queued" } td #run-queue { "waiting for a run slot: " (q.position) " of " (q.waiting) " waiting" } }
            }
            @if let Some(m) = late { tr { th { "Late" } td { (super::insight::late_note(r, m)) } } }
            @if let Some(e) = &r.error { tr { th { "Error" } td #run-error { (e) } } }
            tr { th { "Slot" } td { (r.scheduled_for.format("%Y-%m-%d %H:%M:%S UTC")) " (" (trigger) ")" } }
            tr { th { "Fetch started" } td { (when(r.phases.fetch_started)) } }
            tr { th { "Command started" } td { (when(r.phases.run_started)) } }
            tr { th { "Command ended" } td { (when(r.phases.run_ended)) } }
            tr { th { "Publish started" } td { (when(r.phases.publish_started)) } }
            tr { th { "Finished" } td #run-finished { (when(r.phases.finished)) } }
            tr { th { "Exit code" } td #run-exit { (r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "—".into())) } }
            tr { th { "Code sha256" } td { code { (r.code_sha256.as_deref().unwrap_or("—")) } } }
            @if let Some(p) = &r.provenance {
                tr { th { "Command as run" } td #run-command { code { (p.spec.command) } } }
                tr { th { "Timeout" } td { (p.spec.timeout_seconds) " s" } }
                @if !p.spec.env.is_empty() {
                    tr { th { "Environment" } td { @for (k, v) in &p.spec.env { code { (k) "=" (v) } " " } } }
                }
                tr { th { "Spec sha256" } td #run-spec-sha { code { (p.spec_sha256) } } }
                tr { th { "telejob" } td { (p.telejob_version) } }
                @if let Some(c) = &p.compute { tr { th { "Ran on" } td { (c) } } }
            }
        }
    }
}

/// What a run published (filled in once it has).
pub fn run_published(r: &Run, public_data: bool) -> Markup {
    html! {
        @if r.published.is_empty() {
            p #nothing-published { @if r.state.is_terminal() { "Nothing was published." } @else { "Nothing yet: files are published when the command has succeeded." } }
        } @else {
            @if public_data { p.warn { "These files are public: anyone can read them." } }
            table #published {
                tr { th { "File" } th { "Bytes" } th { "sha256" } }
                @for f in &r.published {
                    tr {
                        td { @if public_data { a href={ "/public/" (f.key) } { (f.path) } } @else { (f.path) } }
                        td { (f.size) }
                        td { code { (f.sha256) } }
                    }
                }
            }
        }
        @if !r.skipped.is_empty() {
            h3 { "Not published" }
            ul { @for s in &r.skipped { li { code { (s.path) } ": " (s.reason) } } }
        }
        @if let Some(m) = &r.manifest_key { p { "Manifest: " @if public_data { a href={ "/public/" (m) } { (m) } } @else { code { (m) } } } }
    }
}

/// A run's page; the log only for the job's owners. While the run is in flight, the page's
/// script streams the log (`/runs/{id}/log?follow=true&from=N`) and refreshes the state
/// (`/runs/{id}/live`) without a reload.
pub fn run_page(user: &str, csrf: &str, p: &RunPage<'_>) -> Markup {
    let RunPage {
        run: r,
        trigger,
        log,
        log_bytes,
        public_data,
        manage,
        late,
        queue,
    } = *p;
    let live = !r.state.is_terminal();
    layout(
        &format!("Run {}", r.id),
        Some(user),
        Some(csrf),
        html! {
            h1 { "Run of " a href={ "/jobs/" (r.job) } { (r.job) } }
            @if let Some(of) = &r.replay_of {
                p { "A replay of run " a href={ "/runs/" (of) } { (of) } "." }
            }
            @if manage && r.provenance.is_some() && r.state.is_terminal() {
                form.inline method="post" action={ "/jobs/" (r.job) "/replay" } {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="run" value=(r.id);
                    button #replay type="submit" title="Run again with this run's code, command, environment and slot" { "Replay" }
                }
            }
            @if manage && live {
                form.inline #cancel-form method="post" action={ "/jobs/" (r.job) "/cancel" } data-confirm="Cancel this run? Its processes are ended and nothing more is published." {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="run" value=(r.id);
                    button #cancel type="submit" { "Cancel" }
                }
            }
            div.card #run-summary data-run=(r.id) data-live=[live.then_some("1")] {
                (run_summary(r, trigger, late, queue))
            }
            h2 { "Published files" }
            div #run-published { (run_published(r, public_data)) }
            h2 { "Log" }
            @match log {
                Some(l) => pre #log data-from=(log_bytes) data-follow=[live.then_some("1")] { (l) },
                None => p #no-log { "Only the job's owner and maintainers may read the log." },
            }
        },
    )
}
