//! The job model: what users schedule.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::limits::{LimitPolicy, LimitSupport, ResourceLimits};
use crate::policy::{
    MissedPolicy, NotifySpec, OverlapPolicy, default_backoff, default_catch_up_limit,
};
use crate::schedule::{Schedule, ScheduleSpec};

/// The command the original form proposed: a wrapper script at the root of the code.
pub const DEFAULT_COMMAND: &str = "./run.sh";
/// The output directory the original form proposed.
pub const DEFAULT_OUTPUT_DIR: &str = "output";
/// The timeout the original form proposed, in minutes.
pub const DEFAULT_TIMEOUT_MINUTES: u32 = 120;
/// The largest timeout accepted unless the operator raises it: one day.
pub const DEFAULT_MAX_TIMEOUT_MINUTES: u32 = 1440;

/// Who may read a job's published output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Published under the public prefix: anyone can read it. The default.
    #[default]
    Public,
    /// Published under the private prefix, readable by the job's owners only.
    Private,
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Private => "private",
        })
    }
}

/// A job name: a lowercase hostname-like label, also the job's publish prefix (`<name>/data/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobName(String);

impl JobName {
    /// Validates a job name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] for `name` unless it is 1–63 lowercase ASCII letters, digits and
    /// dashes, starting and ending with a letter or digit. Such names contain no `/` or `.`, so no
    /// job's prefix can reach into another's.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        let bytes = name.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 63
            && bytes.iter().all(|b| ok_char(*b))
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-');
        if valid {
            Ok(Self(name))
        } else {
            Err(Error::invalid(
                "name",
                format!(
                    "{:?} is not a job name: use 1-63 lowercase letters, digits and dashes, \
                     starting and ending with a letter or digit (e.g. slowsql)",
                    name.chars().take(80).collect::<String>()
                ),
            ))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Derives a job name from a code location: `path/to/slowsql-0.3.tar.gz` → `slowsql`.
    /// Falls back to `job`.
    pub fn derive_from(code: &str) -> Self {
        let base = code
            .trim_end_matches('/')
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or_default();
        let stem = base.split('.').next().unwrap_or_default();
        // Drop a trailing version: slowsql-0 (from slowsql-0.3) → slowsql.
        let stem = match stem.rsplit_once('-') {
            Some((head, tail)) if !head.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => {
                head
            }
            _ => stem,
        };
        let mut out = String::new();
        for c in stem.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        out.truncate(63);
        Self::new(out.trim_end_matches('-')).unwrap_or_else(|_| Self("job".into()))
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for JobName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<String> for JobName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl From<JobName> for String {
    fn from(n: JobName) -> Self {
        n.0
    }
}

impl AsRef<str> for JobName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Operator-set bounds for validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationLimits {
    /// The largest accepted timeout in minutes (default 1440, one day).
    pub max_timeout_minutes: u32,
    /// Resource limits: the operator's defaults and maxima.
    pub resources: LimitPolicy,
    /// The limits the compute enforces; a job may not ask for another.
    pub enforced: LimitSupport,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        Self {
            max_timeout_minutes: DEFAULT_MAX_TIMEOUT_MINUTES,
            resources: LimitPolicy::default(),
            enforced: LimitSupport::ALL,
        }
    }
}

/// A job as users define it: the fields of the "Schedule a Job" form.
///
/// Omitted fields take the form's defaults (command `./run.sh`, output directory `output`, daily at
/// 12:00 UTC, timeout 120 minutes, public output). Unknown fields are rejected, so a typo never
/// silently falls back to a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's unique name, also its publish prefix.
    pub name: String,
    /// Where the code tarball is: a path, `file://`, `http(s)://` or `store:` URL. Servers fill this
    /// in when the code is uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The bash command line, run from the root of the unpacked code.
    #[serde(default = "default_command")]
    pub command: String,
    /// The directory, relative to the code root, whose files are published.
    #[serde(default = "default_output_dir")]
    pub output_dir: String,
    /// When the job fires.
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// Minutes after which the run and everything it started are killed.
    #[serde(default = "default_timeout")]
    pub timeout_minutes: u32,
    /// Who may read the published output.
    #[serde(default)]
    pub output_visibility: Visibility,
    /// Extra environment variables handed to the job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// What happens when a slot fires while the previous run is still going.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// What happens to slots missed while the scheduler was down.
    #[serde(default)]
    pub missed: MissedPolicy,
    /// With `missed = catch_up`: at most this many missed slots are run (1–1000, default 10).
    #[serde(default = "default_catch_up_limit")]
    pub catch_up_limit: u32,
    /// Retries of a failed run (0–10, default 0), with exponential backoff.
    #[serde(default)]
    pub max_retries: u32,
    /// Seconds before the first retry; doubled for each further one (1–86400, default 60).
    #[serde(default = "default_backoff")]
    pub retry_backoff_seconds: u32,
    /// Whether a timed-out run is retried too (default: no).
    #[serde(default)]
    pub retry_on_timeout: bool,
    /// Backfill runs of this job at once (1–16, default 1: one slot after the other).
    #[serde(default = "default_backfill_concurrency")]
    pub backfill_concurrency: u32,
    /// No slot before this instant fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
    /// No slot after this instant fires; the job is then marked expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<DateTime<Utc>>,
    /// Users who may edit, run and read the logs of the job besides its owner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintainers: Vec<String>,
    /// Where notifications go.
    #[serde(default, skip_serializing_if = "NotifySpec::is_empty")]
    pub notify: NotifySpec,
    /// Resource limits; absent ones take the operator's defaults.
    #[serde(default, skip_serializing_if = "ResourceLimits::is_empty")]
    pub limits: ResourceLimits,
    /// For EC2 runs: the instance type, one of the operator's allowed types (default: the
    /// operator's default type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The image the run's machine starts from, one of the images the host offers (default:
    /// the operator's default image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

fn default_command() -> String {
    DEFAULT_COMMAND.into()
}
fn default_output_dir() -> String {
    DEFAULT_OUTPUT_DIR.into()
}
fn default_timeout() -> u32 {
    DEFAULT_TIMEOUT_MINUTES
}
fn default_backfill_concurrency() -> u32 {
    1
}

impl JobSpec {
    /// A job named `name` with every other field at its default.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            code: None,
            command: default_command(),
            output_dir: default_output_dir(),
            schedule: ScheduleSpec::default(),
            timeout_minutes: DEFAULT_TIMEOUT_MINUTES,
            output_visibility: Visibility::Public,
            env: BTreeMap::new(),
            overlap: OverlapPolicy::default(),
            missed: MissedPolicy::default(),
            catch_up_limit: default_catch_up_limit(),
            max_retries: 0,
            retry_backoff_seconds: default_backoff(),
            retry_on_timeout: false,
            backfill_concurrency: default_backfill_concurrency(),
            start_at: None,
            end_at: None,
            maintainers: Vec::new(),
            notify: NotifySpec::default(),
            limits: ResourceLimits::default(),
            instance_type: None,
            image: None,
        }
    }

    /// Checks every field and compiles the schedule.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJobs`] listing **every** problem, each with its field name and what to do.
    pub fn validate(&self, limits: &ValidationLimits) -> Result<ValidJob> {
        let mut errors = Vec::new();
        let name = JobName::new(self.name.clone())
            .map_err(|e| errors.push(e))
            .ok();
        if let Err(e) = validate_command(&self.command) {
            errors.push(e);
        }
        if let Err(e) = validate_output_dir(&self.output_dir) {
            errors.push(e);
        }
        if let Some(code) = &self.code
            && (code.trim().is_empty() || code.contains('\0'))
        {
            errors.push(Error::invalid(
                "code",
                "the code location is empty or holds a NUL byte",
            ));
        }
        if !(1..=limits.max_timeout_minutes).contains(&self.timeout_minutes) {
            errors.push(Error::invalid(
                "timeout_minutes",
                format!(
                    "{} is out of range: use 1 to {} minutes, a little above a typical run",
                    self.timeout_minutes, limits.max_timeout_minutes
                ),
            ));
        }
        if !(1..=1000).contains(&self.catch_up_limit) {
            errors.push(Error::invalid(
                "catch_up_limit",
                format!("{} is out of range: use 1 to 1000", self.catch_up_limit),
            ));
        }
        if self.max_retries > 10 {
            errors.push(Error::invalid(
                "max_retries",
                format!("{} is too many: use 0 to 10", self.max_retries),
            ));
        }
        if !(1..=86_400).contains(&self.retry_backoff_seconds) {
            errors.push(Error::invalid(
                "retry_backoff_seconds",
                format!(
                    "{} is out of range: use 1 to 86400 seconds",
                    self.retry_backoff_seconds
                ),
            ));
        }
        if let Some(t) = &self.instance_type
            && (t.is_empty()
                || t.len() > 64
                || !t.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                }))
        {
            errors.push(Error::invalid(
                "instance_type",
                format!("{t:?} is not an instance type: use a name such as t3.medium"),
            ));
        }
        // Which images exist is the host's to say (the server checks at save time).
        if let Some(i) = &self.image
            && JobName::new(i.as_str()).is_err()
        {
            errors.push(Error::invalid(
                "image",
                format!("{i:?} is not an image name: use lowercase letters, digits and dashes"),
            ));
        }
        if !(1..=16).contains(&self.backfill_concurrency) {
            errors.push(Error::invalid(
                "backfill_concurrency",
                format!("{} is out of range: use 1 to 16", self.backfill_concurrency),
            ));
        }
        if let (Some(s), Some(e)) = (self.start_at, self.end_at)
            && e <= s
        {
            errors.push(Error::invalid(
                "end_at",
                "the end date must be after the start date",
            ));
        }
        for m in &self.maintainers {
            if let Err(e) = validate_user_name(m) {
                errors.push(Error::invalid("maintainers", e.to_string()));
            }
        }
        if let Err(e) = self.notify.validate() {
            errors.push(e);
        }
        if let Err(errs) = self.limits.validate() {
            errors.extend(errs);
        }
        if let Err(errs) = limits.resources.check(&self.limits) {
            errors.extend(errs);
        }
        for field in limits.enforced.unenforced(&self.limits) {
            errors.push(Error::invalid(
                field,
                "this server's compute cannot enforce this limit; remove it",
            ));
        }
        for (k, v) in &self.env {
            if let Err(e) = validate_env_var(k, v) {
                errors.push(e);
            }
        }
        let schedule = match self.schedule.compile() {
            Ok(s) => Some(s),
            Err(Error::InvalidJobs(all)) => {
                errors.extend(all);
                None
            }
            Err(e) => {
                errors.push(e);
                None
            }
        };
        match (name, schedule) {
            (Some(name), Some(schedule)) if errors.is_empty() => Ok(ValidJob {
                name,
                schedule,
                spec: self.clone(),
            }),
            _ => Err(Error::InvalidJobs(errors)),
        }
    }
}

/// A [`JobSpec`] that passed validation, with its name and compiled schedule.
#[derive(Debug, Clone)]
pub struct ValidJob {
    name: JobName,
    schedule: Schedule,
    spec: JobSpec,
}

impl ValidJob {
    /// The validated name.
    pub fn name(&self) -> &JobName {
        &self.name
    }
    /// The compiled schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
    /// The spec as given.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }
    /// The timeout.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.spec.timeout_minutes) * 60)
    }
}

/// Checks a command line.
///
/// # Errors
///
/// [`Error::InvalidJob`] for `command` when it is blank, holds a NUL byte or is over 64 KiB.
pub fn validate_command(command: &str) -> Result<()> {
    if command.trim().is_empty() {
        return Err(Error::invalid(
            "command",
            "the command is empty: give the bash command line to run, e.g. ./run.sh",
        ));
    }
    if command.contains('\0') {
        return Err(Error::invalid(
            "command",
            "the command holds a NUL byte; remove it",
        ));
    }
    if command.len() > 64 * 1024 {
        return Err(Error::invalid(
            "command",
            "the command is over 64 KiB: put it in a script inside the code tarball",
        ));
    }
    Ok(())
}

/// Checks an output directory: relative, inside the code, no `..`.
///
/// # Errors
///
/// [`Error::InvalidJob`] for `output_dir`.
pub fn validate_output_dir(dir: &str) -> Result<()> {
    let field = "output_dir";
    if dir.trim().is_empty() {
        return Err(Error::invalid(
            field,
            "the output directory is empty: use a path relative to the code root, e.g. output",
        ));
    }
    if dir.contains('\0') || dir.len() > 1024 {
        return Err(Error::invalid(
            field,
            "the output directory holds a NUL byte or is over 1024 bytes",
        ));
    }
    for c in Path::new(dir).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::invalid(
                    field,
                    format!(
                        "{dir:?} leaves the code directory (..): use a path inside the code, e.g. output"
                    ),
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::invalid(
                    field,
                    format!(
                        "{dir:?} is absolute: use a path relative to the code root, e.g. output"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a user name: 1–64 lowercase letters, digits, `-`, `_` or `.`, starting with a letter.
///
/// # Errors
///
/// [`Error::InvalidJob`] for `user`.
pub fn validate_user_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "user",
            format!(
                "{name:?} is not a user name: use lowercase letters, digits, -, _ or ., starting with a letter"
            ),
        ))
    }
}

/// Checks one job environment variable.
///
/// # Errors
///
/// [`Error::InvalidJob`] for `env.<KEY>` when the name is not a shell identifier, uses the
/// reserved `TELEJOB_` prefix, or the value holds a NUL byte.
pub fn validate_env_var(key: &str, value: &str) -> Result<()> {
    let field = format!("env.{key}");
    let mut chars = key.chars();
    let ident = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ident {
        return Err(Error::invalid(
            field,
            "not a variable name: use letters, digits and _, not starting with a digit",
        ));
    }
    if key.starts_with("TELEJOB_") {
        return Err(Error::invalid(
            field,
            "TELEJOB_ variables are set by telejob; choose another name",
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid(field, "the value holds a NUL byte"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["slowsql", "a", "job-1", "0day", &"a".repeat(63)] {
            assert!(JobName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Slow",
            "a.b",
            "a/b",
            "a b",
            "ä",
            "../x",
            "a_b",
            "a\0",
            &"a".repeat(64),
            "x'; DROP TABLE jobs;--",
        ] {
            let e = JobName::new(bad).expect_err(bad);
            assert_eq!(e.field_errors()[0].0, "name");
        }
    }

    #[test]
    fn derived_names() {
        assert_eq!(
            JobName::derive_from("dist/slowsql-0.3.tar.gz").as_str(),
            "slowsql"
        );
        assert_eq!(JobName::derive_from("/x/My_Job.tgz").as_str(), "my-job");
        assert_eq!(
            JobName::derive_from("examples/slowsql/").as_str(),
            "slowsql"
        );
        assert_eq!(
            JobName::derive_from("https://h/a/b/%%%.tar").as_str(),
            "job"
        );
    }

    #[test]
    fn defaults_follow_the_original_form() {
        let spec: JobSpec = serde_json::from_str(r#"{"name":"slowsql"}"#).expect("parses");
        assert_eq!(spec, JobSpec::new("slowsql"));
        assert_eq!(spec.command, "./run.sh");
        assert_eq!(spec.output_dir, "output");
        assert_eq!(spec.timeout_minutes, 120);
        assert_eq!(spec.output_visibility, Visibility::Public);
        let v = spec.validate(&ValidationLimits::default()).expect("valid");
        assert_eq!(v.schedule().describe(), "daily at 12:00 UTC");
    }

    #[test]
    fn validation_lists_every_problem() {
        let mut spec = JobSpec::new("Bad.Name");
        spec.command = "  ".into();
        spec.output_dir = "../etc".into();
        spec.timeout_minutes = 0;
        spec.env.insert("TELEJOB_JOB".into(), "x".into());
        spec.env.insert("1X".into(), "x".into());
        spec.schedule.frequency = crate::schedule::Frequency::Weekly;
        let err = spec
            .validate(&ValidationLimits::default())
            .expect_err("invalid");
        let fields: Vec<_> = err.field_errors().into_iter().map(|(f, _)| f).collect();
        for f in [
            "name",
            "command",
            "output_dir",
            "timeout_minutes",
            "env.TELEJOB_JOB",
            "env.1X",
            "schedule.day_of_week",
        ] {
            assert!(fields.contains(&f), "missing {f} in {fields:?}");
        }
    }

    #[test]
    fn timeout_cap_is_configurable() {
        let mut spec = JobSpec::new("j");
        spec.timeout_minutes = 1441;
        assert!(spec.validate(&ValidationLimits::default()).is_err());
        let limits = ValidationLimits {
            max_timeout_minutes: 2880,
            ..ValidationLimits::default()
        };
        assert!(spec.validate(&limits).is_ok());
    }

    #[test]
    fn output_dirs() {
        for ok in ["output", "out/daily", "./output", "."] {
            assert!(validate_output_dir(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/tmp", "../x", "out/../../x", "a\0b"] {
            assert!(validate_output_dir(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_round_trips_json_and_toml() {
        let mut spec = JobSpec::new("slowsql");
        spec.code = Some("dist/slowsql-0.3.tar.gz".into());
        spec.schedule = ScheduleSpec::monthly(31, "06:15".parse().expect("time"))
            .with_timezone("Europe/Berlin");
        spec.timeout_minutes = 175;
        spec.output_visibility = Visibility::Private;
        spec.env.insert("MODE".into(), "full".into());
        let json = serde_json::to_string(&spec).expect("json");
        assert_eq!(
            serde_json::from_str::<JobSpec>(&json).expect("json back"),
            spec
        );
        let toml = toml::to_string(&spec).expect("toml");
        assert_eq!(toml::from_str::<JobSpec>(&toml).expect("toml back"), spec);
        assert!(
            serde_json::from_str::<JobSpec>(r#"{"name":"a","timeout":5}"#).is_err(),
            "unknown fields are rejected"
        );
        assert!(serde_json::from_str::<JobSpec>(r#"{"name":"a","timeout_minutes":-5}"#).is_err());
    }
}
