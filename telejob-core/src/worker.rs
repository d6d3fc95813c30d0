//! Analysis workers: fresh machines like a run's, with their owner's SSH key and a hard
//! lifetime, to develop and test a job before it exists. What every backend and front end
//! shares: the names, the key check and the lifetime rules.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};

/// The unprivileged login user of a worker (it may use `sudo`: the machine is its owner's).
pub const LOGIN_USER: &str = "analyst";

/// The longest total lifetime (from launch, extensions included) unless the operator says.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Live workers a user may have at once unless the operator says.
pub const DEFAULT_PER_USER: usize = 2;

/// The lifetime of a worker launched without one.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(4 * 3600);

/// Checks a worker name: like a job name, 1–63 lowercase letters, digits and dashes, starting
/// with a letter.
///
/// # Errors
///
/// [`Error::InvalidJob`] naming `name`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!(
                "{name:?} is not a worker name: use 1-63 lowercase letters, digits and dashes, starting with a letter"
            ),
        ))
    }
}

/// A name for a worker launched without one: `worker-` and six hex digits (the random part of a
/// fresh UUID v7).
pub fn made_up_name() -> String {
    let id = crate::run::uuid_v7().simple().to_string();
    format!("worker-{}", &id[id.len() - 6..])
}

/// An OpenSSH public key, checked: `<algorithm> <base64> [comment]` on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshPublicKey(String);

impl SshPublicKey {
    /// Parses the text of a `.pub` file (or a pasted key). A private key is refused without
    /// echoing any of it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] (field `ssh_key`) saying what to give instead.
    pub fn parse(text: &str) -> Result<Self> {
        let field = "ssh_key";
        if text.contains("PRIVATE KEY") || text.contains("PuTTY-User-Key-File") {
            return Err(Error::invalid(
                field,
                "this is a private key: never share it; give the public key (the .pub file, such as ~/.ssh/id_ed25519.pub)",
            ));
        }
        let line = text.trim();
        if line.is_empty() || line.lines().count() != 1 {
            return Err(Error::invalid(
                field,
                "give exactly one OpenSSH public key line, such as the contents of ~/.ssh/id_ed25519.pub",
            ));
        }
        let key = ssh_key::PublicKey::from_openssh(line).map_err(|e| {
            Error::invalid(
                field,
                format!(
                    "not an OpenSSH public key ({e}): give a line such as \"ssh-ed25519 AAAA… you@host\""
                ),
            )
        })?;
        // Re-encoded: nothing but the key and a printable comment reaches user data.
        let comment: String = key
            .comment()
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(100)
            .collect();
        let mut clean = key.clone();
        clean.set_comment(comment.trim());
        let encoded = clean
            .to_openssh()
            .map_err(|e| Error::invalid(field, format!("cannot encode the key again: {e}")))?;
        Ok(Self(encoded))
    }

    /// The key line.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's algorithm, such as `ssh-ed25519`.
    pub fn algorithm(&self) -> &str {
        self.0.split(' ').next().unwrap_or("")
    }
}

/// Parses a lifetime such as `4h`, `90m` or `1h30m` for `field`.
///
/// # Errors
///
/// [`Error::InvalidJob`] naming `field`.
pub fn parse_lifetime(field: &str, s: &str) -> Result<Duration> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        Error::invalid(
            field,
            format!("{s:?} is not a duration ({e}): use a form such as 4h, 90m or 1h30m"),
        )
    })
}

/// Checks that a worker living `total` from its launch stays within the operator's maximum.
///
/// # Errors
///
/// [`Error::InvalidJob`] naming `field` (`lifetime`, or `by` for an extension).
pub fn check_lifetime(field: &str, total: Duration, max: Duration) -> Result<()> {
    if total < Duration::from_secs(60) {
        return Err(Error::invalid(
            field,
            "is under a minute: give a lifetime such as 4h",
        ));
    }
    if total > max {
        return Err(Error::invalid(
            field,
            format!(
                "would make the worker live {} from its launch; this server allows at most {}",
                humantime::format_duration(Duration::from_secs(total.as_secs())),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(())
}

/// The machine types jobs and workers may ask for on a backend that offers several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineTypes {
    /// The type used unless one is asked for.
    pub default: String,
    /// The types that may be asked for (empty: only the default).
    pub allowed: Vec<String>,
}

impl MachineTypes {
    /// Whether `t` may be asked for: listed, or the default when the list is empty.
    pub fn allows(&self, t: &str) -> bool {
        if self.allowed.is_empty() {
            t == self.default
        } else {
            self.allowed.iter().any(|a| a == t)
        }
    }

    /// The types that may be asked for, comma-separated.
    pub fn allowed_list(&self) -> String {
        if self.allowed.is_empty() {
            self.default.clone()
        } else {
            self.allowed.join(", ")
        }
    }

    /// The types to offer in a list: the allowed ones, or the default alone.
    pub fn choices(&self) -> Vec<String> {
        if self.allowed.is_empty() {
            vec![self.default.clone()]
        } else {
            self.allowed.clone()
        }
    }
}

/// What a worker launch needs.
#[derive(Debug, Clone)]
pub struct WorkerLaunch<'a> {
    /// Its name (unique among live workers).
    pub name: &'a str,
    /// Its owner.
    pub owner: &'a str,
    /// The key the login user accepts.
    pub key: &'a SshPublicKey,
    /// When it ends (the server terminates it then; the reaper too).
    pub deadline: DateTime<Utc>,
    /// The dead-man shutdown: the machine powers itself off this long after boot, whatever
    /// happens (the operator's maximum lifetime, so that extensions stay possible).
    pub hard_stop: Duration,
    /// The machine type (default: the backend's default); must be allowed.
    pub instance_type: Option<&'a str>,
}

/// A worker as its backend knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInstance {
    /// The machine (an EC2 instance id).
    pub instance_id: String,
    /// The worker's name.
    pub name: String,
    /// Its owner.
    pub owner: String,
    /// When it ends.
    pub deadline: Option<DateTime<Utc>>,
    /// The machine's state (`pending`, `running`, `shutting-down`, `terminated`, …).
    pub state: String,
    /// Where to reach it: the public address, else the private one.
    pub address: Option<String>,
    /// The machine type.
    pub instance_type: String,
    /// When it was launched.
    pub launched_at: Option<DateTime<Utc>>,
}

impl WorkerInstance {
    /// The `ssh` command line for it, once it has an address.
    pub fn ssh_command(&self) -> Option<String> {
        self.address
            .as_ref()
            .map(|a| format!("ssh {LOGIN_USER}@{a}"))
    }
}

/// Analysis workers on remote machines: launch, list, extend, terminate. Backends that offer
/// them give one through [`Compute::workers`](crate::compute::Compute::workers).
///
/// # Contract
///
/// A worker's state lives with the machine (its name, owner and deadline), so that any
/// process — a server after a restart, the CLI without a server, the reaper — can find it.
/// `launch` checks nothing the caller should (name, key, cap); it refuses a machine type
/// [`WorkerBackend::machine_types`] does not allow.
#[async_trait::async_trait]
pub trait WorkerBackend: Send + Sync + std::fmt::Debug + 'static {
    /// The machine types workers may ask for.
    fn machine_types(&self) -> MachineTypes;
    /// Starts a worker.
    async fn launch(&self, w: &WorkerLaunch<'_>) -> Result<WorkerInstance>;
    /// Every live worker (not terminated), of every owner.
    async fn list(&self) -> Result<Vec<WorkerInstance>>;
    /// The live worker named `name`.
    async fn get(&self, name: &str) -> Result<Option<WorkerInstance>> {
        Ok(self.list().await?.into_iter().find(|w| w.name == name))
    }
    /// Moves a worker's deadline.
    async fn set_deadline(&self, machine: &str, deadline: DateTime<Utc>) -> Result<()>;
    /// Ends a worker and confirms it is going.
    async fn terminate(&self, machine: &str) -> Result<()>;
    /// The state of a machine; `None` when the backend does not know it (yet, or any more).
    async fn state(&self, machine: &str) -> Result<Option<String>>;
    /// Ends every worker past its deadline except those named in `followed` (their follower
    /// ends them). Returns the ones ended.
    async fn reap(&self, followed: &HashSet<String>) -> Result<Vec<WorkerInstance>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti foo@bar.com";

    #[test]
    fn public_keys_pass_and_private_keys_are_refused_without_echo() {
        let k = SshPublicKey::parse(&format!("  {ED}\n")).expect("key");
        assert_eq!(k.as_str(), ED);
        assert_eq!(k.algorithm(), "ssh-ed25519");
        let ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHwf2HMM5TRXvo2SQJjsNkiDD5KqiiNjrGVv3UUh+mMT5RHxiRtOnlqvjhQtBq0VpmpCV/PwUdhOig4vkbqAcEc= ecdsa@host";
        assert!(SshPublicKey::parse(ecdsa).is_ok());
        let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n";
        let e = SshPublicKey::parse(private)
            .expect_err("private")
            .to_string();
        assert!(e.contains("private key") && e.contains("ssh_key"), "{e}");
        assert!(!e.contains("b3BlbnNzaC1"), "never echoed: {e}");
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-ed25519 not-base64 x",
            "hello world",
            &format!("{ED}\n{ED}"),
        ] {
            let e = SshPublicKey::parse(bad).expect_err(bad).to_string();
            assert!(e.contains("ssh_key"), "{e}");
        }
        // A comment cannot smuggle anything into the user data.
        let k = SshPublicKey::parse(&format!(
            "{} a'b;$(x)`y`",
            &ED[..ED.rfind(' ').unwrap_or(0)]
        ))
        .expect("key");
        assert!(!k.as_str().contains('\n'));
    }

    #[test]
    fn names_and_lifetimes() {
        assert!(validate_name("dev-box-1").is_ok());
        assert!(validate_name(&made_up_name()).is_ok());
        for bad in ["", "Dev", "1box", "box-", "a_b", &"a".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_lifetime("lifetime", "1h30m").expect("d"),
            Duration::from_secs(5400)
        );
        assert!(parse_lifetime("lifetime", "soon").is_err());
        let day = DEFAULT_MAX_LIFETIME;
        assert!(check_lifetime("lifetime", Duration::from_secs(4 * 3600), day).is_ok());
        let e = check_lifetime("by", Duration::from_secs(25 * 3600), day).expect_err("over");
        assert!(e.to_string().contains("at most 1day"), "{e}");
        assert!(check_lifetime("lifetime", Duration::ZERO, day).is_err());
    }
}
