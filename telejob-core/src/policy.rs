//! Per-job scheduling policies: overlap, missed slots, retries, notifications.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What happens when a slot fires while the job's previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Don't start; the slot is recorded as a `missed` run saying why (the default).
    #[default]
    Forbid,
    /// Start anyway; runs overlap.
    Allow,
    /// Cancel the running one, then start.
    Replace,
}

/// What happens to slots that passed while the scheduler was down (or late).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedPolicy {
    /// Run none of them; each is recorded as a `missed` run.
    Skip,
    /// Run the most recent one; the others are recorded as `missed` (the default).
    #[default]
    Latest,
    /// Run up to `catch_up_limit` of the most recent ones, oldest first; the rest are `missed`.
    CatchUp,
}

/// Where a job's notifications go: on failure, timeout, missed run, expiry, and the first success
/// after failures.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// A URL that receives a JSON POST per event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Email addresses (needs SMTP configured on the server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email: Vec<String>,
}

impl NotifySpec {
    /// Whether anything is configured.
    pub fn is_empty(&self) -> bool {
        self.webhook.is_none() && self.email.is_empty()
    }

    /// Checks the webhook URL and addresses.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] for `notify.webhook` or `notify.email`.
    pub fn validate(&self) -> Result<()> {
        if let Some(w) = &self.webhook {
            let ok = (w.starts_with("http://") || w.starts_with("https://"))
                && w.len() <= 2048
                && !w.chars().any(char::is_whitespace);
            if !ok {
                return Err(Error::invalid(
                    "notify.webhook",
                    format!(
                        "{w:?} is not an http(s) URL: use e.g. https://hooks.example.com/telejob"
                    ),
                ));
            }
        }
        for e in &self.email {
            let ok = e.len() <= 254
                && e.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
                && !e.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || c == ',' || c == '<' || c == '>'
                });
            if !ok {
                return Err(Error::invalid(
                    "notify.email",
                    format!("{e:?} is not an email address"),
                ));
            }
        }
        Ok(())
    }
}

pub(crate) fn default_catch_up_limit() -> u32 {
    10
}

pub(crate) fn default_backoff() -> u32 {
    60
}
