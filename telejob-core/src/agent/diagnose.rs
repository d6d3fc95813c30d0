//! What a run's log says about the machine it ran on, and the hint a failed command's summary
//! gets from its log: a missing command, a refused permission, a full disk — so that the
//! summary says what to do (not "check the script is in the tarball" when the missing command
//! is `sudo`).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::limits::{Network, ResourceLimits};

/// The last 16 KiB of the log at `path` (lossy), for hints.
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 << 10)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The first command the log says was not found (`bash: jq: command not found`,
/// `./run.sh: line 3: sudo: command not found`).
fn missing_command(log: &str) -> Option<String> {
    log.lines().rev().find_map(|l| {
        let l = l.strip_suffix(": command not found")?;
        l.rsplit(": ").next().map(|c| c.trim().to_string())
    })
}

/// Whether the log says a fork was refused for want of processes (bash's `fork: Resource
/// temporarily unavailable`, `Cannot fork`, Python's `BlockingIOError` on fork).
pub(crate) fn forks_refused(log: &str) -> bool {
    log.lines().any(|l| {
        (l.contains("fork") && l.contains("Resource temporarily unavailable"))
            || l.contains("Cannot fork")
    })
}

/// The hint for a command that exited with `code` and wrote `log`, in a machine of its own
/// (`machine`) or a restricted process of the host.
pub(crate) fn hint(code: i32, log: &str, machine: bool) -> String {
    if log.contains("No space left on device") {
        return " (the disk is full: raise limits.disk, or write less)".into();
    }
    if let Some(cmd) = missing_command(log).filter(|_| code == 127 || code != 0) {
        if cmd == "sudo" {
            return if machine {
                " (sudo is not in the image: the job runs as root, so run the command without sudo)"
                    .into()
            } else {
                " (sudo is not available: runs are not machines of their own on this host, see the run log's first line)".into()
            };
        }
        if cmd.starts_with("./") || cmd.starts_with('/') || cmd.ends_with(".sh") {
            return format!(
                " ({cmd} not found: check the command and that the script is in the tarball)"
            );
        }
        return if machine {
            format!(
                " ({cmd}: command not found: install it in the wrapper, e.g. apt-get install -y {cmd}, or check the command)"
            )
        } else {
            format!(" ({cmd}: command not found on this host: check the command)")
        };
    }
    if log.contains("Permission denied") || log.contains("Operation not permitted") {
        return if machine {
            " (permission denied: the job is root of its machine, but not of the host: it cannot load kernel modules, use BPF or reach the host's files)".into()
        } else {
            " (permission denied: runs here are not root and see the host read-only; write under $TELEJOB_OUTPUT_DIR, $HOME or $TMPDIR)".into()
        };
    }
    match code {
        127 => {
            " (command not found: check the command and that the script is in the tarball)".into()
        }
        126 => " (not executable: chmod +x the script before packaging)".into(),
        _ => String::new(),
    }
}

/// The log's first line for a machine: image, user, network, limits.
pub(crate) fn machine_preamble(
    image: &str,
    base: u32,
    outbound: bool,
    l: &ResourceLimits,
) -> String {
    let network = if outbound {
        "network on (outbound only)"
    } else {
        "network off (loopback only)"
    };
    format!(
        "telejob: a machine of its own: image {image}; root in a user namespace (host UIDs {base}-{}); {network}; {}\n",
        u64::from(base) + 65_535,
        limits(l)
    )
}

/// The log's first line for a run that owns the whole host it runs on (`host` describes it).
pub(crate) fn own_host_preamble(host: &str, l: &ResourceLimits) -> String {
    let network = match l.network {
        Some(Network::Off) => "network off",
        _ => "network on",
    };
    format!(
        "telejob: a machine of its own: {host}; root; {network}; {}\n",
        limits(l)
    )
}

/// The log's first line for a run that is a restricted process of the host.
pub(crate) fn host_preamble(not_isolated: Option<&str>, l: &ResourceLimits) -> String {
    let net = match l.network {
        Some(Network::Off) => "network off",
        _ => "the host's network",
    };
    match not_isolated {
        Some(why) => format!("telejob: {why}; {net}; {}\n", limits(l)),
        None => format!("telejob: {net}; {}\n", limits(l)),
    }
}

fn limits(l: &ResourceLimits) -> String {
    let mut v = Vec::new();
    if let Some(d) = l.disk {
        v.push(format!("disk {d}"));
    }
    if let Some(m) = l.memory {
        v.push(format!("memory {m}"));
    }
    if let Some(c) = l.cpu {
        v.push(format!("cpu {c}"));
    }
    if let Some(p) = l.processes {
        v.push(format!("processes {p}"));
    }
    if v.is_empty() {
        "no resource limits".into()
    } else {
        format!("limits: {}", v.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_follow_what_the_log_says() {
        let sudo = "./run.sh: line 2: sudo: command not found\n";
        assert!(
            hint(127, sudo, true).contains("without sudo"),
            "{}",
            hint(127, sudo, true)
        );
        assert!(!hint(127, sudo, true).contains("tarball"));
        let jq = "bash: line 1: jq: command not found\n";
        assert!(hint(127, jq, true).contains("apt-get install -y jq"));
        let script = "bash: line 1: ./analyze.sh: No such file or directory\n";
        assert!(hint(127, script, true).contains("tarball"));
        let missing = "bash: ./analyze.sh: command not found\n";
        assert!(hint(127, missing, true).contains("./analyze.sh not found"));
        let full = "cp: error writing 'x': No space left on device\n";
        assert!(hint(1, full, true).contains("limits.disk"));
        let denied = "mkdir: cannot create directory '/etc/x': Permission denied\n";
        assert!(hint(1, denied, false).contains("not root"));
        assert!(hint(1, "plain failure\n", true).is_empty());
        assert!(hint(126, "", true).contains("chmod"));
        assert!(forks_refused(
            "./run.sh: fork: retry: Resource temporarily unavailable\n"
        ));
        assert!(forks_refused("sh: Cannot fork\n"));
        assert!(!forks_refused("cp: Resource temporarily unavailable\n"));
    }

    #[test]
    fn the_preamble_names_the_image_the_user_the_network_and_the_limits() {
        let l = ResourceLimits {
            disk: Some(crate::limits::Bytes(200 << 20)),
            ..Default::default()
        };
        let p = machine_preamble("default (Debian bookworm)", 1_880_096_768, true, &l);
        assert!(p.contains("image default (Debian bookworm)"), "{p}");
        assert!(
            p.contains("root in a user namespace (host UIDs 1880096768-1880162303)"),
            "{p}"
        );
        assert!(p.contains("network on (outbound only)"), "{p}");
        assert!(p.contains("disk 200 MiB"), "{p}");
    }
}
