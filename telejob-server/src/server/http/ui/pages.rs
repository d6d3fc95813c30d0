//! HTML, checked at compile time by maud; every interpolation is escaped.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use telejob_core::run::Run;

use super::form::JobForm;
pub use super::job_page::{JobPage, job_page};
pub use super::run_page::{RunPage, run_page, run_published, run_summary, when};
use crate::server::db::JobRow;

const CSS: &str = r#"
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}header .who{margin-left:auto;opacity:.85}
main{max-width:980px;margin:1.2em auto;padding:0 1em}
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;padding:.4em .6em;border-bottom:1px solid #e3e6ea}
.badge{background:#c62828;color:#fff;border-radius:3px;padding:0 .4em;font-size:.85em}.card{background:#fff;border:1px solid #e3e6ea;border-radius:6px;padding:1em 1.2em;margin:1em 0}
label{display:block;font-weight:600;margin-top:.8em}label.inline{display:inline;font-weight:400}input[type=checkbox]{min-width:0}input,select{font:inherit;padding:.3em;min-width:16em}
.help{color:#5c6670;font-size:.88em;margin:.15em 0}.error{color:#b00020;font-weight:600;font-size:.9em}
.warn{background:#fff4e5;border:1px solid #f0b05a;padding:.6em .9em;border-radius:6px}
.state-succeeded{color:#1b7f3b}.state-failed,.state-timed_out,.state-interrupted{color:#b00020}.state-missed{color:#8a6d00}
button{font:inherit;padding:.35em .9em;cursor:pointer}form.inline{display:inline}pre{background:#111;color:#eee;padding:1em;overflow:auto;max-height:30em}
"#;

/// The page frame.
pub fn layout(title: &str, user: Option<&str>, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — telejob" }
                style { (PreEscaped(CSS)) }
                script src="/ui/app.js" defer {}
            }
            body {
                header {
                    a href="/" { "telejob" }
                    @if user.is_some() {
                        a href="/" { "Jobs" }
                        a href="/jobs/new" { "Schedule a Job" }
                        a href="/workers" { "Workers" }
                    }
                    @if let Some(u) = user {
                        span.who { "signed in as " (u) }
                        @if let Some(c) = csrf {
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(c);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// Sign in with a token.
pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        None,
        html! {
            h1 { "Sign in" }
            div.card {
                p { "Paste your API token. The admin's is in " code { "<data-dir>/admin.token" } "; "
                    code { "telejob token create --user NAME" } " makes more." }
                @if let Some(e) = error { p.error { (e) } }
                form method="post" action="/login" {
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="off" required;
                    p { button type="submit" { "Sign in" } }
                }
            }
        },
    )
}

/// The job list.
pub fn jobs(
    user: &str,
    csrf: &str,
    rows: &[(JobRow, String, Option<String>, Option<Run>)],
    late: &std::collections::HashSet<String>,
) -> Markup {
    layout(
        "Jobs",
        Some(user),
        Some(csrf),
        html! {
            h1 { "Jobs" }
            @if rows.is_empty() {
                p { "No jobs yet. " a href="/jobs/new" { "Schedule a Job" } "." }
            } @else {
                table {
                    tr { th { "Job" } th { "Schedule" } th { "Next run" } th { "Last run" } }
                    @for (job, words, next, last) in rows {
                        tr {
                            td { a href={ "/jobs/" (job.spec.name) } { (job.spec.name) }
                                @if job.paused { " (paused)" } @if job.expired { " (expired)" }
                                @if late.contains(&job.spec.name) { " " span.late title="a run of this job is running late" { "running late" } }
                                @for (badge, why) in badges(job) { " " span.badge title=(why) { (badge) } } }
                            td { (words) }
                            td { (next.as_deref().unwrap_or("—")) }
                            td {
                                @if let Some(r) = last {
                                    a href={ "/runs/" (r.id) } class={ "state-" (r.state) } { (r.state) }
                                    " " (when(r.phases.finished.or(r.phases.created_at)))
                                } @else { "—" }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What predicts that a job's runs will fail, as short badges with their reason: no code yet,
/// or a command whose script the current code lacks (or has, not executable).
pub fn badges(j: &JobRow) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if j.code_key.is_none() {
        out.push((
            "no code",
            "no code is uploaded: its runs fail until there is (Edit, or telejob jobs code)".into(),
        ));
    }
    for w in &j.code_warnings {
        let label = if w.message.contains("not executable") {
            "script not executable"
        } else {
            "script missing"
        };
        out.push((label, format!("{}: {}", w.field, w.message)));
    }
    out
}

/// A limit field's placeholder: the server's default, or that there is none.
fn default_limit(v: Option<String>) -> String {
    v.unwrap_or_else(|| "no limit".into())
}

fn field_error(f: &JobForm, k: &str) -> Markup {
    html! { @if let Some(e) = f.errors.get(k) { p.error id={ "error-" (k) } { (e) } } }
}

/// A text field of the form: its label, the input showing `placeholder` when empty, a line of
/// help if any, and the field's error.
fn text_field(
    f: &JobForm,
    name: &str,
    label: &str,
    placeholder: &str,
    help: Option<&str>,
) -> Markup {
    html! {
        label for=(name) { (label) }
        input #(name) name=(name) value=(f.get(name)) placeholder=(placeholder);
        @if let Some(h) = help { p.help { (h) } }
        (field_error(f, name))
    }
}

fn select(f: &JobForm, name: &str, options: &[(&str, &str)]) -> Markup {
    html! {
        select #(name) name=(name) {
            @for (v, label) in options {
                option value=(v) selected[f.get(name) == *v] { (label) }
            }
        }
    }
}

/// The "Schedule a Job" form; with `editing`, the form that edits that job.
pub fn job_form(
    user: &str,
    csrf: &str,
    f: &JobForm,
    general: Option<&str>,
    editing: Option<&str>,
) -> Markup {
    let days = [
        ("monday", "Monday"),
        ("tuesday", "Tuesday"),
        ("wednesday", "Wednesday"),
        ("thursday", "Thursday"),
        ("friday", "Friday"),
        ("saturday", "Saturday"),
        ("sunday", "Sunday"),
    ];
    let title = editing.map_or_else(|| "Schedule a Job".to_string(), |n| format!("Edit {n}"));
    let net_default = format!(
        "this server's default ({})",
        f.limit_defaults
            .network
            .map_or_else(|| "on".to_string(), |n| n.to_string())
    );
    let action = editing.map_or_else(|| "/jobs".to_string(), |n| format!("/jobs/{n}/edit"));
    layout(
        &title,
        Some(user),
        Some(csrf),
        html! {
            h1 { (title) }
            @if let Some(g) = general { p.error { (g) } }
            form #job-form method="post" action=(action) enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(csrf);
                div.card {
                    label for="name" { "Job name" }
                    input #name name="name" value=(f.get("name")) required readonly[editing.is_some()];
                    p.help { "Lowercase letters, digits and dashes. It is also where the output goes: <store>/<name>/data/." }
                    (field_error(f, "name"))

                    label for="code" { "Code tarball" }
                    input #code type="file" name="code";
                    p.help { "A .tar.gz (or .tgz, .tar.xz, .tar.zst, .tar) with your wrapper script; " code { "telejob package DIR" } " makes one. It is unpacked into an empty directory before each run."
                        @if editing.is_some() { " Leave it empty to keep the current version." }
                        @else { " No tarball yet? Try " a href="/example/slowsql.tar.gz" { "the slowsql example" } "." } }
                    (field_error(f, "code"))

                    label for="command" { "Execution command line" }
                    input #command name="command" value=(f.get("command"));
                    p.help { "Run with bash from the root of the unpacked code." }
                    (field_error(f, "command"))

                    label for="output_dir" { "Output directory" }
                    input #output_dir name="output_dir" value=(f.get("output_dir"));
                    p.help { "Relative to the code root. Every file in it is published when the command succeeds." }
                    p.warn { "Public output is readable by anyone. Publish aggregates, never raw data or anything sensitive." }
                    (field_error(f, "output_dir"))

                    label for="output_visibility" { "Output visibility" }
                    (select(f, "output_visibility", &[("public", "public — anyone can read it"), ("private", "private — the job's owners only")]))
                }
                div.card {
                    label for="frequency" { "Schedule frequency" }
                    (select(f, "frequency", &[("daily", "daily"), ("weekly", "weekly"), ("monthly", "monthly"), ("cron", "cron expression")]))
                    (field_error(f, "frequency"))
                    div #field-day_of_week data-for="weekly" {
                        label for="day_of_week" { "Day of week" }
                        (select(f, "day_of_week", &days))
                        (field_error(f, "day_of_week"))
                    }
                    div #field-day_of_month data-for="monthly" {
                        label for="day_of_month" { "Day of month" }
                        input #day_of_month name="day_of_month" type="number" min="1" max="31" value=(f.get("day_of_month"));
                        p.help { "29–31 run on the last day of shorter months." }
                        (field_error(f, "day_of_month"))
                    }
                    div #field-time_of_day data-for="daily weekly monthly" {
                        label for="time_of_day" { "Time of day (UTC unless a time zone is given)" }
                        input #time_of_day name="time_of_day" value=(f.get("time_of_day")) placeholder="HH:MM";
                        p.help { "Now it is " span #utc-now { "…" } " UTC. Noon is the default because yesterday's data may arrive late." }
                        (field_error(f, "time_of_day"))
                    }
                    div #field-cron data-for="cron" {
                        (text_field(f, "cron", "Cron expression", "0 12 * * *", Some("Five fields: minute hour day-of-month month day-of-week.")))
                    }
                    (text_field(f, "timezone", "Time zone", "UTC", None))
                    p.help { "Next runs: " span #preview { "…" } }
                }
                div.card.warnings #form-warnings hidden {
                    h2 { "Warnings (they do not stop you)" }
                    ul #warnings {}
                }
                div.card {
                    label for="timeout_minutes" { "Job timeout (minutes)" }
                    input #timeout_minutes name="timeout_minutes" type="number" min="1" value=(f.get("timeout_minutes"));
                    p.help { "The run and everything it started are killed after this. Set it a little above a typical run." }
                    (field_error(f, "timeout_minutes"))
                }
                details #advanced open[f.advanced_matters()] {
                summary { "Advanced settings: policies, notifications, environment, secrets, limits" @if !f.images.is_empty() { ", image" } }
                div.card {
                    @if let Some(types) = &f.machine_types {
                        label for="instance_type" { "Instance type (empty: " (types.default) ")" }
                        input #instance_type name="instance_type" value=(f.get("instance_type")) placeholder=(types.default);
                        @if !types.allowed.is_empty() { p.help { "Allowed here: " (types.allowed.join(", ")) "." } }
                        (field_error(f, "instance_type"))
                    }
                    @if !f.images.is_empty() {
                        label for="image" { "Image (what the run's machine starts from; it is root there and may install anything)" }
                        select #image name="image" {
                            option value="" selected[f.get("image").is_empty()] { "the default image" }
                            @for i in &f.images {
                                option value=(i) selected[f.get("image") == i.as_str()] { (i) }
                            }
                        }
                        (field_error(f, "image"))
                    }
                    label for="overlap" { "If the previous run is still going" }
                    (select(f, "overlap", &[("forbid", "skip this run (recorded as missed)"), ("allow", "run both"), ("replace", "cancel the old run")]))
                    label for="missed" { "Runs missed while telejob was down" }
                    (select(f, "missed", &[("latest", "run the most recent one"), ("skip", "run none"), ("catch_up", "run them all (up to 10)")]))
                    label for="catch_up_limit" { "At most this many missed runs are made up" }
                    input #catch_up_limit name="catch_up_limit" type="number" min="1" max="1000" value=(f.get("catch_up_limit"));
                    (field_error(f, "catch_up_limit"))
                    label for="max_retries" { "Retries after a failure" }
                    input #max_retries name="max_retries" type="number" min="0" max="10" value=(f.get("max_retries"));
                    (field_error(f, "max_retries"))
                    label for="retry_backoff_seconds" { "Seconds before the first retry (doubled for each next one)" }
                    input #retry_backoff_seconds name="retry_backoff_seconds" type="number" min="1" value=(f.get("retry_backoff_seconds"));
                    (field_error(f, "retry_backoff_seconds"))
                    label { input #retry_on_timeout type="checkbox" name="retry_on_timeout" checked[!f.get("retry_on_timeout").is_empty()]; " Retry runs that timed out too" }
                    label for="backfill_concurrency" { "Backfill runs at once" }
                    input #backfill_concurrency name="backfill_concurrency" type="number" min="1" max="16" value=(f.get("backfill_concurrency"));
                    (field_error(f, "backfill_concurrency"))
                    (text_field(f, "start_at", "Start (optional)", "2026-12-01T00:00:00Z", None))
                    (text_field(f, "end_at", "End (optional)", "2027-12-01T00:00:00Z", Some("After its end the job is marked expired and runs no more.")))
                }
                div.card {
                    (text_field(f, "maintainers", "Maintainers (optional)", "bob, carol", Some("Users who may edit, run and read the logs of this job besides you.")))
                    (text_field(f, "notify_webhook", "Webhook for failures (optional)", "https://hooks.example.com/telejob", None))
                    (text_field(f, "notify_email", "Email for failures (optional)", "team@example.com", Some("Sent on failure, timeout, missed run, expiry, and the first success after failures.")))
                }
                div.card {
                    label for="env" { "Environment variables (optional)" }
                    textarea #env name="env" rows="3" placeholder="REGION=eu-west-1" { (f.get("env")) }
                    p.help { "One NAME=value per line. Whoever can see the job can read them: put credentials in secrets." }
                    (field_error(f, "env"))
                    label for="secrets" { "Secrets (optional)" }
                    textarea #secrets name="secrets" rows="2" placeholder="API_TOKEN=…" autocomplete="off" {}
                    p.help {
                        "One NAME=value per line; NAME= alone removes one. Given to the run as environment variables, stored encrypted, masked in the log, never shown again."
                        @if !f.get("secret_names").is_empty() { " Set now: " (f.get("secret_names")) "." }
                    }
                    (field_error(f, "secrets"))
                }
                div.card {
                    p.help { "Resource limits: leave a field empty for this server's default (shown greyed)." }
                    label for="limit_memory" { "Memory" }
                    input #limit_memory name="limit_memory" value=(f.get("limit_memory")) placeholder=(default_limit(f.limit_defaults.memory.map(|v| v.to_string())));
                    (field_error(f, "limit_memory"))
                    label for="limit_cpu" { "CPUs" }
                    input #limit_cpu name="limit_cpu" value=(f.get("limit_cpu")) placeholder=(default_limit(f.limit_defaults.cpu.map(|v| v.to_string())));
                    (field_error(f, "limit_cpu"))
                    label for="limit_processes" { "Processes at once" }
                    input #limit_processes name="limit_processes" type="number" min="4" value=(f.get("limit_processes")) placeholder=(default_limit(f.limit_defaults.processes.map(|v| v.to_string())));
                    (field_error(f, "limit_processes"))
                    label for="limit_disk" { "Workspace disk space" }
                    input #limit_disk name="limit_disk" value=(f.get("limit_disk")) placeholder=(default_limit(f.limit_defaults.disk.map(|v| v.to_string())));
                    (field_error(f, "limit_disk"))
                    label for="limit_network" { "Network" }
                    (select(f, "limit_network", &[("", &net_default), ("on", "on"), ("off", "off: loopback only")]))
                    (field_error(f, "limit_network"))
                }
                }
                p { button #submit type="submit" { @if editing.is_some() { "Save" } @else { "Schedule the job" } } }
            }
        },
    )
}

/// The dashboard's one script, served as `/ui/app.js` (the Content-Security-Policy allows no
/// inline script): confirmation before dangerous forms, and the job form's schedule preview.
pub const APP_JS: &str = r#"
(function(){ const f=document.getElementById('ssh_key_file'), t=document.getElementById('ssh_key');
  if(f&&t) f.addEventListener('change',async()=>{ if(f.files[0]) t.value=(await f.files[0].text()).trim(); }); })();
document.addEventListener('submit',e=>{ const m=e.target.dataset&&e.target.dataset.confirm; if(m&&!confirm(m)) e.preventDefault(); });
(function(){
  const log=document.getElementById('log'), card=document.getElementById('run-summary');
  if(log) log.scrollTop=log.scrollHeight;
  if(!card||!card.dataset.live) return;
  const id=card.dataset.run;
  async function follow(){
    if(!log||!log.dataset.follow) return;
    try{ const r=await fetch('/runs/'+id+'/log?follow=true&from='+log.dataset.from,{credentials:'same-origin'});
      const rd=r.body.getReader(), dec=new TextDecoder();
      for(;;){ const {done,value}=await rd.read(); if(done) break;
        const end=log.scrollTop+log.clientHeight>=log.scrollHeight-4;
        log.append(dec.decode(value,{stream:true})); if(end) log.scrollTop=log.scrollHeight; }
    }catch(e){}
  }
  async function refresh(){
    try{ const r=await fetch('/runs/'+id+'/live',{credentials:'same-origin'}); const j=await r.json();
      card.innerHTML=j.summary; document.getElementById('run-published').innerHTML=j.published;
      if(j.ended){ const c=document.getElementById('cancel-form'); if(c) c.remove(); return; }
    }catch(e){}
    setTimeout(refresh,1000);
  }
  follow(); setTimeout(refresh,1000);
})();
(function(){
  const f=document.getElementById('job-form'), freq=document.getElementById('frequency');
  if(!f||!freq) return;
  function show(){ document.querySelectorAll('[data-for]').forEach(d=>{ d.hidden=!d.dataset.for.split(' ').includes(freq.value); }); }
  function tick(){ const n=new Date(); document.getElementById('utc-now').textContent=n.toISOString().slice(11,16); }
  let t=null;
  function preview(){ clearTimeout(t); t=setTimeout(async()=>{
    const p=new URLSearchParams();
    for(const el of f.elements){ if(!el.name||el.type==='file'||el.type==='password'||el.name.includes('secret')||el.name==='csrf') continue;
      if((el.type==='checkbox'||el.type==='radio')&&!el.checked) continue; p.set(el.name,el.value); }
    const out=document.getElementById('preview'), box=document.getElementById('form-warnings'), list=document.getElementById('warnings');
    try{ const r=await fetch('/ui/preview?'+p.toString(),{credentials:'same-origin'}); const j=await r.json();
      out.textContent=j.error?j.error:(j.description+': '+j.next.join(', '));
      list.replaceChildren(...(j.warnings||[]).map(w=>{ const li=document.createElement('li'); li.className='warning';
        const b=document.createElement('strong'); b.textContent=w.field; li.append(b,': '+w.message); return li; }));
      box.hidden=!(j.warnings&&j.warnings.length); }catch(e){ out.textContent='(preview unavailable)'; }
  },150); }
  freq.addEventListener('change',()=>{show();preview();});
  f.addEventListener('input',preview);
  show(); tick(); setInterval(tick,10000); preview();
})();
"#;

/// The page after a save whose uploaded code drew warnings.
pub fn saved_with_warnings(
    user: &str,
    csrf: &str,
    name: &str,
    w: &[telejob_core::advice::Warning],
    created: bool,
) -> Markup {
    let to = if created {
        format!("/jobs/{name}?created=1")
    } else {
        format!("/jobs/{name}")
    };
    layout(
        "Saved, with warnings",
        Some(user),
        Some(csrf),
        html! {
            h1 { "Saved " (name) ", with warnings" }
            p { "The job is saved and scheduled. The uploaded code says:" }
            (super::insight::warnings(w))
            p { a #continue href=(to) { "On to the job" } }
        },
    )
}

/// A page for errors and other one-line news.
pub fn message(user: Option<&str>, csrf: Option<&str>, title: &str, text: &str) -> Markup {
    layout(
        title,
        user,
        csrf,
        html! { h1 { (title) } p { (text) } p { a href="/" { "Back to the jobs" } } },
    )
}
