//! The settings flags `jobs create` and `jobs edit` share, and the JSON Merge Patch they make.

use clap::Args;
use serde_json::{Map, Value, json};

use crate::error::bad;

/// A job's settings as flags: what is given is set, the rest is left as it is (`edit`) or to
/// the server's defaults (`create`).
#[derive(Debug, Default, Args)]
pub struct SettingsArgs {
    /// The bash command line, run from the code root (default ./run.sh).
    #[arg(long)]
    command: Option<String>,
    /// The directory whose files are published, relative to the code root (default output).
    #[arg(long)]
    output_dir: Option<String>,
    /// daily (the default), weekly (with --day-of-week), monthly (with --day-of-month) or
    /// cron (with --cron).
    #[arg(long, value_name = "daily|weekly|monthly|cron")]
    frequency: Option<String>,
    /// For weekly jobs: monday … sunday.
    #[arg(long)]
    day_of_week: Option<String>,
    /// For monthly jobs: 1–31 (29–31: the last day of shorter months).
    #[arg(long)]
    day_of_month: Option<u8>,
    /// HH:MM in --tz (default noon: yesterday's data may arrive late).
    #[arg(long, value_name = "HH:MM")]
    at: Option<String>,
    /// A five-field cron expression (sets the frequency to cron).
    #[arg(long, allow_hyphen_values = true)]
    cron: Option<String>,
    /// IANA time zone of --at and --cron (default UTC).
    #[arg(long, alias = "timezone", value_name = "ZONE")]
    tz: Option<String>,
    /// Kill the run (and everything it started) after this long, in whole minutes: 90m, 3h,
    /// 1h30m (default 2h).
    #[arg(long, value_parser = parse_job_timeout, value_name = "DURATION")]
    timeout: Option<u32>,
    /// The old spelling of --timeout, in minutes.
    #[arg(long, hide = true, conflicts_with = "timeout")]
    timeout_minutes: Option<u32>,
    /// public (the default) or private output.
    #[arg(long, value_name = "public|private")]
    visibility: Option<String>,
    /// An environment variable for the job, KEY=VALUE; repeat for more.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Remove an environment variable; repeat for more.
    #[arg(long = "unset-env", value_name = "KEY")]
    unset_env: Vec<String>,
    /// Set the secret NAME to the value of the variable NAME of this shell's environment (it
    /// never appears on a command line); repeat for more.
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// Remove the secret NAME; repeat for more.
    #[arg(long = "remove-secret", value_name = "NAME")]
    remove_secrets: Vec<String>,
    #[command(flatten)]
    limits: crate::cli::run::LimitArgs,
    /// Retries of a failed run (0–10).
    #[arg(long, value_name = "N")]
    max_retries: Option<u32>,
    /// The image runs start from (see `telejob image list` on the server).
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// For EC2 runs: the instance type.
    #[arg(long, value_name = "TYPE")]
    instance_type: Option<String>,
    /// More settings as a JSON object (policies, notify, maintainers…), merged over the flags.
    #[arg(long, value_name = "JSON")]
    extra: Option<String>,
}

/// Parses a job's timeout: a duration with its unit (`90m`, `3h`, `1h30m`), in whole minutes.
fn parse_job_timeout(s: &str) -> Result<u32, String> {
    let d = crate::cli::run::parse_timeout(s)?;
    if d.as_secs() % 60 != 0 {
        return Err(format!(
            "a job's timeout is whole minutes: write {}m",
            d.as_secs().div_ceil(60)
        ));
    }
    u32::try_from(d.as_secs() / 60).map_err(|_| "the timeout is too long".into())
}

impl SettingsArgs {
    /// The settings given, as a JSON Merge Patch (RFC 7396): `null` removes (an env var, a
    /// secret, a schedule field another frequency does not take).
    pub fn patch(&self) -> anyhow::Result<Map<String, Value>> {
        let mut p = Map::new();
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                p.insert(k.to_string(), v);
            }
        };
        set("command", self.command.clone().map(Value::from));
        set("output_dir", self.output_dir.clone().map(Value::from));
        set(
            "timeout_minutes",
            self.timeout.or(self.timeout_minutes).map(Value::from),
        );
        set(
            "output_visibility",
            self.visibility.clone().map(Value::from),
        );
        set("max_retries", self.max_retries.map(Value::from));
        set("image", self.image.clone().map(Value::from));
        set("instance_type", self.instance_type.clone().map(Value::from));
        if let Some(s) = self.schedule() {
            p.insert("schedule".into(), s);
        }
        let limits = self.limits.limits();
        if !limits.is_empty() {
            p.insert("limits".into(), json!(limits));
        }
        let mut env = Map::new();
        for kv in &self.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("--env {kv}: give KEY=VALUE")))?;
            env.insert(k.to_string(), Value::from(v));
        }
        for k in &self.unset_env {
            env.insert(k.clone(), Value::Null);
        }
        if !env.is_empty() {
            p.insert("env".into(), Value::Object(env));
        }
        let mut secrets = Map::new();
        for name in &self.secrets {
            let value = std::env::var(name).map_err(|_| {
                bad(format!(
                    "--secret {name}: {name} is not set in this shell's environment: export it first"
                ))
            })?;
            secrets.insert(name.clone(), Value::from(value));
        }
        for name in &self.remove_secrets {
            secrets.insert(name.clone(), Value::Null);
        }
        if !secrets.is_empty() {
            p.insert("secrets".into(), Value::Object(secrets));
        }
        let mut p = Value::Object(p);
        if let Some(extra) = &self.extra {
            let extra: Value =
                serde_json::from_str(extra).map_err(|e| bad(format!("--extra: not JSON: {e}")))?;
            if !extra.is_object() {
                return Err(bad("--extra: give a JSON object"));
            }
            json_patch::merge(&mut p, &extra);
        }
        let Value::Object(p) = p else {
            unreachable!("a merge over an object is an object")
        };
        Ok(p)
    }

    /// The schedule fields given; choosing a frequency clears the fields only others take.
    fn schedule(&self) -> Option<Value> {
        let frequency = if self.cron.is_some() {
            Some("cron".to_string())
        } else {
            self.frequency.clone()
        };
        let mut s = Map::new();
        if let Some(f) = &frequency {
            for k in ["day_of_week", "day_of_month", "cron"] {
                s.insert(k.into(), Value::Null);
            }
            s.insert("frequency".into(), Value::from(f.as_str()));
        }
        for (k, v) in [
            ("day_of_week", self.day_of_week.clone().map(Value::from)),
            ("day_of_month", self.day_of_month.map(Value::from)),
            ("time_of_day", self.at.clone().map(Value::from)),
            ("cron", self.cron.clone().map(Value::from)),
            ("timezone", self.tz.clone().map(Value::from)),
        ] {
            if let Some(v) = v {
                s.insert(k.into(), v);
            }
        }
        (!s.is_empty()).then_some(Value::Object(s))
    }
}

/// `v` without its `null`s (a create has nothing to remove).
pub fn without_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: super::SettingsArgs,
    }

    fn patch(args: &[&str]) -> serde_json::Value {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).expect("parse");
        serde_json::Value::Object(t.s.patch().expect("patch"))
    }

    #[test]
    fn flags_make_a_merge_patch_of_only_what_they_name() {
        assert_eq!(
            patch(&["--timeout", "3h", "--env", "K=V", "--unset-env", "OLD"]),
            json!({"timeout_minutes": 180, "env": {"K": "V", "OLD": null}})
        );
        assert_eq!(
            patch(&["--cron", "*/5 * * * *", "--tz", "Europe/Berlin"]),
            json!({"schedule": {"frequency": "cron", "cron": "*/5 * * * *",
                "day_of_week": null, "day_of_month": null, "timezone": "Europe/Berlin"}})
        );
        assert_eq!(
            patch(&["--at", "06:00"]),
            json!({"schedule": {"time_of_day": "06:00"}})
        );
        assert_eq!(
            patch(&["--timezone", "UTC", "--timeout-minutes", "90"]),
            json!({"schedule": {"timezone": "UTC"}, "timeout_minutes": 90}),
            "the old spellings still work"
        );
        assert_eq!(
            patch(&["--memory", "2GiB", "--network", "off"]),
            json!({"limits": {"memory": "2GiB", "network": "off"}})
        );
    }

    #[test]
    fn a_timeout_needs_its_unit_and_whole_minutes() {
        for (arg, says) in [("90", "90m"), ("90s", "2m"), ("0", "positive")] {
            let e = T::try_parse_from(["t", "--timeout", arg])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(says), "{arg}: {e}");
        }
    }
}
