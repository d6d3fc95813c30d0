//! A job's page: its settings, badges, actions, duration chart, code versions and runs.

use maud::{Markup, html};
use telejob_core::run::Run;

use super::pages::{badges, layout, when};
use crate::server::db::{CodeVersion, JobRow};

/// What a job's page shows.
#[derive(Debug)]
pub struct JobPage<'a> {
    /// The job.
    pub job: &'a JobRow,
    /// Whether the viewer may run, pause, delete it.
    pub can_manage: bool,
    /// Its code versions, newest first.
    pub versions: &'a [CodeVersion],
    /// Its runs, newest first, with their triggers.
    pub runs: &'a [(Run, String)],
    /// Its next fire time.
    pub next: Option<&'a str>,
    /// Just created: say what will happen.
    pub created: bool,
    /// What its spec says before it runs.
    pub warnings: &'a [telejob_core::advice::Warning],
    /// Its usual command duration, once known.
    pub usual: Option<telejob_core::advice::Usual>,
    /// Late marks of its runs.
    pub late: &'a std::collections::HashMap<String, crate::server::db::LateMark>,
    /// The names of its secrets and when each was set.
    pub secrets: &'a [crate::server::db::SecretInfo],
}

/// A setting's value as its API spelling (`forbid`, `catch_up`).
fn spelled<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => String::new(),
    }
}

/// Every setting of a job, each on its row (the "Job settings" card).
fn job_settings(j: &JobRow, secrets: &[crate::server::db::SecretInfo]) -> Markup {
    let spec = &j.spec;
    let l = &spec.limits;
    let or_default = |v: Option<String>| v.unwrap_or_else(|| "the server's default".into());
    html! {
        table #settings {
            tr { th { "Visibility" } td { (spelled(&spec.output_visibility)) } }
            tr { th { "Environment" } td #settings-env {
                @if spec.env.is_empty() { "—" }
                @for (k, v) in &spec.env { code { (k) "=" (v) } br; }
            } }
            tr { th { "Secrets" } td #settings-secrets {
                @if secrets.is_empty() { "—" }
                @for sec in secrets { code { (sec.name) } " (set " (when(Some(sec.set_at))) ")" br; }
            } }
            tr { th { "Limits" } td #settings-limits {
                "memory " (or_default(l.memory.map(|b| b.to_string()))) "; "
                "CPUs " (or_default(l.cpu.map(|c| c.to_string()))) "; "
                "processes " (or_default(l.processes.map(|p| p.to_string()))) "; "
                "disk " (or_default(l.disk.map(|b| b.to_string()))) "; "
                "network " (or_default(l.network.map(|n| n.to_string())))
            } }
            tr { th { "Image" } td { (or_default(spec.image.clone())) } }
            @if let Some(t) = &spec.instance_type { tr { th { "Instance type" } td { (t) } } }
            tr { th { "Policies" } td #settings-policies {
                "overlap " code { (spelled(&spec.overlap)) } "; missed slots " code { (spelled(&spec.missed)) }
                @if spec.missed == telejob_core::policy::MissedPolicy::CatchUp { " (at most " (spec.catch_up_limit) ")" }
                "; retries " (spec.max_retries)
                @if spec.max_retries > 0 { " (first after " (spec.retry_backoff_seconds) " s, doubling" @if spec.retry_on_timeout { ", timeouts too" } ")" }
                "; backfill " (spec.backfill_concurrency) " at a time"
            } }
            @if spec.start_at.is_some() || spec.end_at.is_some() {
                tr { th { "Active" } td { "from " (when(spec.start_at)) " to " (when(spec.end_at)) } }
            }
            tr { th { "Notifications" } td #settings-notify {
                @if spec.notify.is_empty() { "—" }
                @if let Some(w) = &spec.notify.webhook { "webhook " code { (w) } br; }
                @for e in &spec.notify.email { "email " (e) br; }
            } }
            tr { th { "Maintainers" } td { @if spec.maintainers.is_empty() { "—" } @else { (spec.maintainers.join(", ")) } } }
        }
    }
}

/// A job's page; a new job's page says what will happen, in plain words.
pub fn job_page(user: &str, csrf: &str, p: &JobPage<'_>) -> Markup {
    let JobPage {
        job: j,
        can_manage,
        versions,
        runs,
        next,
        created,
        warnings,
        usual,
        late,
        secrets,
    } = *p;
    let sched = j.spec.schedule.compile().ok();
    let words = sched.as_ref().map(|s| s.describe()).unwrap_or_default();
    let cron = sched.as_ref().map(|s| s.cron_line()).unwrap_or_default();
    let name = &j.spec.name;
    let where_to = if j.spec.output_visibility == telejob_core::job::Visibility::Public {
        format!("the public store under {name}/data/ (readable by anyone)")
    } else {
        format!("the private store under {name}/data/ (readable by the job's owners only)")
    };
    html! {
        (layout(name, Some(user), Some(csrf), html! {
            h1 { "Job " (name) @if j.paused { " (paused)" } @if j.expired { " (expired)" } }
            @let predicted = badges(j);
            @if !predicted.is_empty() {
                div.card.warnings #badges {
                    @for (badge, why) in &predicted { p { span.badge { (badge) } " " (why) } }
                }
            }
            @if created {
                div.card #what-happens {
                    h2 { "Scheduled. Here is what will happen" }
                    ul {
                        li { "The code is stored privately as version " code { (versions.first().map(|v| v.sha256.as_str()).unwrap_or("—")) } "." }
                        li { "At every run it is unpacked into an empty directory, and " code { (j.spec.command) } " runs there with bash." }
                        li { "Every file of " code { (j.spec.output_dir) } " is then published to " (where_to) "; files of the same name there are overwritten." }
                        li { "It runs " (words) " (as cron: " code { (cron) } "); next run " (next.unwrap_or("—")) "." }
                        li { "A run still going after " (j.spec.timeout_minutes) " minutes is killed, with everything it started." }
                    }
                }
            }
            div.card {
                table {
                    tr { th { "Schedule" } td { (words) } }
                    tr { th { "Next run" } td { (next.unwrap_or("—")) } }
                    tr { th { "Command" } td { code { (j.spec.command) } } }
                    tr { th { "Output directory" } td { code { (j.spec.output_dir) } " → " (where_to) } }
                    tr { th { "Timeout" } td { (j.spec.timeout_minutes) " minutes" } }
                    tr { th { "Owner" } td { (j.owner) } }
                    tr { th { "Published data" } td { a href={ "/public/" (name) "/data/" } { "/public/" (name) "/data/" } } }
                }
                @if can_manage {
                    p {
                        form.inline method="post" action={ "/jobs/" (name) "/run" } { input type="hidden" name="csrf" value=(csrf); button #run-now type="submit" { "Run now" } }
                        " "
                        @if j.paused {
                            form.inline method="post" action={ "/jobs/" (name) "/resume" } { input type="hidden" name="csrf" value=(csrf); button type="submit" { "Resume" } }
                        } @else {
                            form.inline method="post" action={ "/jobs/" (name) "/pause" } { input type="hidden" name="csrf" value=(csrf); button type="submit" { "Pause" } }
                        }
                        " "
                        a href={ "/jobs/" (name) "/edit" } { "Edit" }
                        " "
                        a #backfill href={ "/jobs/" (name) "/backfill" } { "Backfill…" }
                        " "
                        form.inline method="post" action={ "/jobs/" (name) "/delete" } data-confirm="Delete this job, its code, logs and run history? Published data is kept (and the name stays yours) unless you ticked the box." {
                            input type="hidden" name="csrf" value=(csrf);
                            label.inline { input #purge-public type="checkbox" name="purge_public" value="1"; " also delete its published data" }
                            " "
                            button type="submit" { "Delete" }
                        }
                    }
                }
            }
            div.card { h2 { "Job settings" } (job_settings(j, secrets)) }
            (super::insight::warnings(warnings))
            h2 { "Durations" }
            (super::insight::chart(runs, usual, f64::from(j.spec.timeout_minutes) * 60.0, late))
            h2 { "Code versions" }
            table #code-versions {
                tr { th { "sha256" } th { "file" } th { "bytes" } th { "uploaded" } th { "by" } th {} }
                @for v in versions {
                    @let current = j.code_key.as_deref() == Some(v.key.as_str());
                    tr class=[current.then_some("current")] {
                        td { code { (v.sha256) } @if current { " " strong.current-marker { "current" } } }
                        td.file-name { (v.file_name.as_deref().unwrap_or("—")) }
                        td { (v.size) }
                        td { (when(chrono::DateTime::parse_from_rfc3339(&v.uploaded_at).ok().map(|t| t.with_timezone(&chrono::Utc)))) }
                        td { (v.uploaded_by) }
                        td {
                            @if can_manage {
                                a.download href={ "/jobs/" (name) "/code/" (v.sha256) } download { "download" }
                                @if !current {
                                    " "
                                    form.inline method="post" action={ "/jobs/" (name) "/use-code" } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="sha256" value=(v.sha256);
                                        button.make-current type="submit" { "make current" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Runs" }
            table #runs {
                tr { th { "Run" } th { "State" } th { "For slot" } th { "Trigger" } th { "Fetch" } th { "Command" } th { "Publish" } }
                @for (r, trigger) in runs {
                    tr {
                        td { a href={ "/runs/" (r.id) } { (r.id) } }
                        td class={ "state-" (r.state) } { (r.state) @if late.contains_key(r.id.as_str()) { " " span.late title="running late" { "(late)" } } }
                        td { (when(Some(r.scheduled_for))) }
                        td { (trigger) }
                        td { (span(r.phases.fetch_started, r.phases.run_started)) }
                        td { (span(r.phases.run_started, r.phases.run_ended)) }
                        td { (span(r.phases.publish_started, r.phases.finished)) }
                    }
                }
            }
        }))
    }
}

fn span(
    a: Option<chrono::DateTime<chrono::Utc>>,
    b: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    match (a, b) {
        (Some(a), Some(b)) => seconds((b - a).num_milliseconds()),
        _ => "—".into(),
    }
}

/// A duration to the second: `under 1 s`, `14 s`, `2 min 5 s`, `1 h 2 min`.
fn seconds(ms: i64) -> String {
    let s = (ms + 500) / 1000;
    match s {
        _ if ms < 1000 => "under 1 s".into(),
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}
