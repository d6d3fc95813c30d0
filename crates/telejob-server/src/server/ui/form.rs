//! The "Schedule a Job" form: what the browser sends, turned into a `JobSpec` and checked by the
//! same validation as the API.

use std::collections::HashMap;

use telejob_core::job::{JobSpec, ValidationLimits, Visibility};
use telejob_core::policy::{MissedPolicy, OverlapPolicy};
use telejob_core::schedule::{Frequency, ScheduleSpec, TimeOfDay, parse_weekday};

/// Submitted values by field name, and errors by field name.
#[derive(Debug, Clone, Default)]
pub struct JobForm {
    /// What the user typed (kept when the form is rejected).
    pub values: HashMap<String, String>,
    /// Problems, by form field.
    pub errors: HashMap<String, String>,
}

impl JobForm {
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
            ("max_retries", "0"),
        ] {
            values.insert(k.to_string(), v.to_string());
        }
        Self {
            values,
            errors: HashMap::new(),
        }
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
        match self.get("max_retries").trim().parse::<u32>() {
            Ok(n) => spec.max_retries = n,
            Err(_) => self.err("max_retries", "give a whole number, 0 to 10"),
        }
        if let Err(e) = spec.validate(limits) {
            for (f, m) in e.field_errors() {
                self.err(f.strip_prefix("schedule.").unwrap_or(f), m);
            }
        }
        self.errors.is_empty().then_some(spec)
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
