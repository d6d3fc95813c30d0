//! The "Schedule a Job" form: what the browser sends, turned into a `JobSpec` and checked by the
//! same validation as the API.

use std::collections::HashMap;

use telejob_core::job::{JobSpec, ValidationLimits, Visibility};
use telejob_core::limits::{Bytes, Cpus, Network, ResourceLimits};
use telejob_core::policy::{MissedPolicy, OverlapPolicy};
use telejob_core::schedule::{Frequency, ScheduleSpec, TimeOfDay, parse_weekday};

/// Submitted values by field name, and errors by field name.
#[derive(Debug, Clone, Default)]
pub struct JobForm {
    /// What the user typed (kept when the form is rejected).
    pub values: HashMap<String, String>,
    /// Problems, by form field.
    pub errors: HashMap<String, String>,
    /// The images a job may name on this server (the "Image" select); empty: runs here are
    /// not machines of their own, and the select is not shown.
    pub images: Vec<String>,
    /// The instance types of an EC2 server (`None`: runs are not instances, and the field is
    /// not shown).
    pub machine_types: Option<telejob_core::worker::MachineTypes>,
    /// The limits a job that sets none gets here (the fields' placeholders).
    pub limit_defaults: telejob_core::limits::ResourceLimits,
}

impl JobForm {
    /// Whether an advanced setting (policies, notifications, limits, image, instance type)
    /// differs from the defaults or has an error: the folded part of the form opens then.
    pub fn advanced_matters(&self) -> bool {
        const ADVANCED: [&str; 19] = [
            "instance_type",
            "image",
            "overlap",
            "missed",
            "catch_up_limit",
            "max_retries",
            "retry_backoff_seconds",
            "retry_on_timeout",
            "backfill_concurrency",
            "start_at",
            "end_at",
            "maintainers",
            "notify_webhook",
            "notify_email",
            "limit_memory",
            "limit_cpu",
            "limit_processes",
            "limit_disk",
            "limit_network",
        ];
        let d = Self::defaults();
        ADVANCED
            .iter()
            .any(|k| self.errors.contains_key(*k) || self.get(k) != d.get(k))
    }

    /// The form's defaults: those of the original service.
    pub fn defaults() -> Self {
        let mut values = HashMap::new();
        for (k, v) in [
            ("command", "./run.sh"),
            ("output_dir", "output"),
            ("output_visibility", "public"),
            ("frequency", "daily"),
            ("day_of_week", "monday"),
            ("day_of_month", "1"),
            ("time_of_day", "12:00"),
            ("timeout_minutes", "120"),
            ("overlap", "forbid"),
            ("missed", "latest"),
            ("catch_up_limit", "10"),
            ("max_retries", "0"),
            ("retry_backoff_seconds", "60"),
            ("backfill_concurrency", "1"),
        ] {
            values.insert(k.to_string(), v.to_string());
        }
        Self {
            values,
            errors: HashMap::new(),
            images: Vec::new(),
            machine_types: None,
            limit_defaults: telejob_core::limits::ResourceLimits::default(),
        }
    }

    /// The form filled in from an existing job, for editing.
    pub fn from_spec(spec: &JobSpec) -> Self {
        let mut f = Self::defaults();
        let mut set = |k: &str, v: String| {
            f.values.insert(k.to_string(), v);
        };
        set("name", spec.name.clone());
        set("command", spec.command.clone());
        set("output_dir", spec.output_dir.clone());
        set("output_visibility", spec.output_visibility.to_string());
        set("frequency", spec.schedule.frequency.to_string());
        if let Some(d) = spec.schedule.day_of_week {
            set("day_of_week", format!("{d:?}"));
        }
        if let Some(d) = spec.schedule.day_of_month {
            set("day_of_month", d.to_string());
        }
        set("time_of_day", spec.schedule.time_of_day.to_string());
        set("cron", spec.schedule.cron.clone().unwrap_or_default());
        set(
            "timezone",
            spec.schedule.timezone.clone().unwrap_or_default(),
        );
        set("timeout_minutes", spec.timeout_minutes.to_string());
        set("overlap", format!("{:?}", spec.overlap).to_lowercase());
        set(
            "missed",
            match spec.missed {
                MissedPolicy::Skip => "skip",
                MissedPolicy::Latest => "latest",
                MissedPolicy::CatchUp => "catch_up",
            }
            .into(),
        );
        set("catch_up_limit", spec.catch_up_limit.to_string());
        set("max_retries", spec.max_retries.to_string());
        set(
            "retry_backoff_seconds",
            spec.retry_backoff_seconds.to_string(),
        );
        if spec.retry_on_timeout {
            set("retry_on_timeout", "on".into());
        }
        set(
            "backfill_concurrency",
            spec.backfill_concurrency.to_string(),
        );
        let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        set("start_at", fmt(spec.start_at));
        set("end_at", fmt(spec.end_at));
        set("maintainers", spec.maintainers.join(", "));
        set(
            "instance_type",
            spec.instance_type.clone().unwrap_or_default(),
        );
        set("image", spec.image.clone().unwrap_or_default());
        set(
            "notify_webhook",
            spec.notify.webhook.clone().unwrap_or_default(),
        );
        set("notify_email", spec.notify.email.join(", "));
        set(
            "env",
            spec.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        // A limit as the form takes it back: empty when unset, sizes without spaces ("2GiB").
        fn text(v: Option<impl std::fmt::Display>) -> String {
            v.map(|v| v.to_string().replace(' ', ""))
                .unwrap_or_default()
        }
        let l = &spec.limits;
        set("limit_memory", text(l.memory));
        set("limit_cpu", text(l.cpu));
        set("limit_processes", text(l.processes));
        set("limit_disk", text(l.disk));
        set("limit_network", text(l.network));
        f
    }

    /// `NAME=value` lines of field `field`, in order.
    fn pairs(&mut self, field: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let text = self.get(field).to_string();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.split_once('=') {
                Some((k, v)) => out.push((k.trim().to_string(), v.to_string())),
                None => {
                    self.err(field, format!("{line:?}: write one NAME=value per line"));
                }
            }
        }
        out
    }

    /// The secrets the form sets (`NAME=value`) or removes (`NAME=`).
    pub fn secret_changes(&mut self) -> crate::server::db::secret_box::SecretChanges {
        let changes = self
            .pairs("secrets")
            .into_iter()
            .map(|(k, v)| (k, Some(v).filter(|v| !v.is_empty())))
            .collect();
        if let Err(telejob_core::Error::InvalidJob { reason, field }) =
            crate::server::db::secret_box::validate(&changes)
        {
            self.err(
                "secrets",
                format!("{}: {reason}", field.trim_start_matches("secrets.")),
            );
        }
        changes
    }

    /// A submitted value.
    pub fn get(&self, k: &str) -> &str {
        self.values.get(k).map_or("", String::as_str)
    }

    fn err(&mut self, field: &str, msg: impl Into<String>) {
        self.errors
            .entry(field.to_string())
            .or_insert_with(|| msg.into());
    }

    /// The spec, if every field is valid; otherwise the errors are filled in.
    pub fn check(&mut self, limits: &ValidationLimits) -> Option<JobSpec> {
        let mut spec = JobSpec::new(self.get("name").trim());
        spec.command = self.get("command").to_string();
        spec.output_dir = self.get("output_dir").trim().to_string();
        spec.output_visibility = match self.get("output_visibility") {
            "private" => Visibility::Private,
            _ => Visibility::Public,
        };
        match self.schedule() {
            Ok(s) => spec.schedule = s,
            Err((f, m)) => self.err(&f, m),
        }
        match self.get("timeout_minutes").trim().parse::<u32>() {
            Ok(n) => spec.timeout_minutes = n,
            Err(_) => self.err(
                "timeout_minutes",
                "give a whole number of minutes, e.g. 120",
            ),
        }
        spec.overlap = match self.get("overlap") {
            "allow" => OverlapPolicy::Allow,
            "replace" => OverlapPolicy::Replace,
            _ => OverlapPolicy::Forbid,
        };
        spec.missed = match self.get("missed") {
            "skip" => MissedPolicy::Skip,
            "catch_up" => MissedPolicy::CatchUp,
            _ => MissedPolicy::Latest,
        };
        for (field, slot) in [
            ("max_retries", &mut spec.max_retries),
            ("catch_up_limit", &mut spec.catch_up_limit),
            ("retry_backoff_seconds", &mut spec.retry_backoff_seconds),
            ("backfill_concurrency", &mut spec.backfill_concurrency),
        ] {
            match self.get(field).trim().parse::<u32>() {
                Ok(n) => *slot = n,
                Err(_) => self.err(field, "give a whole number"),
            }
        }
        spec.retry_on_timeout = !self.get("retry_on_timeout").is_empty();
        let t = self.get("instance_type").trim();
        spec.instance_type = (!t.is_empty()).then(|| t.to_string());
        let i = self.get("image").trim();
        spec.image = (!i.is_empty()).then(|| i.to_string());
        for (field, slot) in [
            ("start_at", &mut spec.start_at),
            ("end_at", &mut spec.end_at),
        ] {
            let v = self.get(field).trim();
            if !v.is_empty() {
                match chrono::DateTime::parse_from_rfc3339(v) {
                    Ok(t) => *slot = Some(t.with_timezone(&chrono::Utc)),
                    Err(_) => self.err(
                        field,
                        "give an instant like 2026-12-01T00:00:00Z, or leave it empty",
                    ),
                }
            }
        }
        let list = |s: &str| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        spec.maintainers = list(self.get("maintainers"));
        spec.notify.email = list(self.get("notify_email"));
        spec.notify.webhook =
            Some(self.get("notify_webhook").trim().to_string()).filter(|w| !w.is_empty());
        spec.env = self.pairs("env").into_iter().collect();
        self.limits(&mut spec.limits);
        if let Err(e) = spec.validate(limits) {
            for (f, m) in e.field_errors() {
                let f = f.strip_prefix("schedule.").unwrap_or(f);
                let f = match f {
                    "notify.webhook" => "notify_webhook",
                    "notify.email" => "notify_email",
                    f if f.starts_with("env.") => "env",
                    "limits.memory" => "limit_memory",
                    "limits.cpu" => "limit_cpu",
                    "limits.processes" => "limit_processes",
                    "limits.disk" => "limit_disk",
                    "limits.network" => "limit_network",
                    other => other,
                };
                self.err(f, m);
            }
        }
        self.errors.is_empty().then_some(spec)
    }

    /// The resource limit fields (empty: the server's default).
    fn limits(&mut self, l: &mut ResourceLimits) {
        l.memory = self.parsed("limit_memory", Bytes::parse).or(l.memory);
        l.cpu = self.parsed("limit_cpu", Cpus::parse).or(l.cpu);
        l.processes = self
            .parsed("limit_processes", |v| {
                v.parse()
                    .map_err(|_| "give a whole number, e.g. 256".to_string())
            })
            .or(l.processes);
        l.disk = self.parsed("limit_disk", Bytes::parse).or(l.disk);
        l.network = self
            .parsed("limit_network", str::parse::<Network>)
            .or(l.network);
    }

    /// Field `k` parsed with `parse`; `None` when empty, or (with the error recorded) invalid.
    fn parsed<T>(&mut self, k: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let v = self.get(k).trim().to_string();
        if v.is_empty() {
            return None;
        }
        parse(&v).map_err(|e| self.err(k, e)).ok()
    }

    /// The schedule part, only from the fields the chosen frequency uses.
    pub fn schedule(&self) -> Result<ScheduleSpec, (String, String)> {
        let frequency: Frequency = self
            .get("frequency")
            .parse()
            .map_err(|e: telejob_core::Error| ("frequency".to_string(), e.to_string()))?;
        let tz = Some(self.get("timezone").trim())
            .filter(|t| !t.is_empty() && *t != "UTC")
            .map(str::to_string);
        let at = || -> Result<TimeOfDay, (String, String)> {
            self.get("time_of_day")
                .parse()
                .map_err(|e: telejob_core::Error| ("time_of_day".to_string(), field_message(&e)))
        };
        let mut s = match frequency {
            Frequency::Daily => ScheduleSpec::daily(at()?),
            Frequency::Weekly => {
                let d = parse_weekday(self.get("day_of_week"))
                    .map_err(|e| ("day_of_week".to_string(), field_message(&e)))?;
                ScheduleSpec::weekly(d, at()?)
            }
            Frequency::Monthly => {
                let d = self.get("day_of_month").trim().parse::<u8>().map_err(|_| {
                    (
                        "day_of_month".to_string(),
                        "give a day of the month, 1 to 31".to_string(),
                    )
                })?;
                ScheduleSpec::monthly(d, at()?)
            }
            Frequency::Cron => ScheduleSpec::cron(self.get("cron").trim()),
        };
        s.timezone = tz;
        Ok(s)
    }
}

/// The reason of a field error, without the field name in front.
fn field_message(e: &telejob_core::Error) -> String {
    e.field_errors()
        .first()
        .map_or_else(|| e.to_string(), |(_, m)| (*m).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> JobForm {
        let mut f = JobForm::defaults();
        for (k, v) in pairs {
            f.values.insert((*k).into(), (*v).into());
        }
        f
    }

    #[test]
    fn defaults_make_a_valid_daily_job() {
        let mut f = form(&[("name", "slowsql")]);
        let spec = f.check(&ValidationLimits::default()).expect("valid");
        assert_eq!(spec, JobSpec::new("slowsql"));
    }

    #[test]
    fn an_edited_job_round_trips_through_the_form() {
        let mut spec = JobSpec::new("rt");
        spec.schedule = ScheduleSpec::weekly(chrono::Weekday::Fri, "06:30".parse().expect("time"))
            .with_timezone("Europe/Berlin");
        spec.timeout_minutes = 175;
        spec.max_retries = 2;
        spec.retry_on_timeout = true;
        spec.missed = MissedPolicy::CatchUp;
        spec.maintainers = vec!["bob".into()];
        spec.notify.webhook = Some("https://h.example/x".into());
        spec.end_at = Some("2030-01-01T00:00:00Z".parse().expect("instant"));
        spec.instance_type = Some("t3.large".into());
        spec.image = Some("python".into());
        let mut f = JobForm::from_spec(&spec);
        assert_eq!(f.check(&ValidationLimits::default()), Some(spec));
    }

    #[test]
    fn the_image_select_offers_the_servers_images_and_keeps_the_choice() {
        let page = |f: &JobForm| {
            super::super::pages::job_form("alice", "csrf", f, None, None).into_string()
        };
        let mut f = form(&[("name", "a"), ("image", "python")]);
        assert!(
            !page(&f).contains(r#"<select id="image""#),
            "no images: no select"
        );
        f.images = vec!["default".into(), "python".into()];
        let html = page(&f);
        assert!(
            html.contains(r#"<select id="image" name="image">"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<option value="python" selected>python</option>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<option value="">the default image</option>"#),
            "{html}"
        );
        assert_eq!(
            f.check(&ValidationLimits::default()).and_then(|s| s.image),
            Some("python".into())
        );
    }

    #[test]
    fn hidden_fields_do_not_leak_into_the_schedule() {
        // The weekly day stays in the form while daily is chosen: it must not count.
        let mut f = form(&[
            ("name", "a"),
            ("frequency", "daily"),
            ("day_of_week", "friday"),
        ]);
        assert!(
            f.check(&ValidationLimits::default()).is_some(),
            "{:?}",
            f.errors
        );
    }

    #[test]
    fn errors_land_on_their_fields() {
        let mut f = form(&[
            ("name", "Bad Name"),
            ("frequency", "monthly"),
            ("day_of_month", "32"),
            ("timeout_minutes", "0"),
        ]);
        assert!(f.check(&ValidationLimits::default()).is_none());
        for k in ["name", "day_of_month", "timeout_minutes"] {
            assert!(f.errors.contains_key(k), "{k}: {:?}", f.errors);
        }
        let mut f = form(&[
            ("name", "a"),
            ("frequency", "cron"),
            ("cron", "0 0 12 * * ? 2030"),
        ]);
        assert!(f.check(&ValidationLimits::default()).is_none());
        assert!(f.errors.contains_key("cron"), "{:?}", f.errors);
    }
}
