//! A lease holder's name: its host, boot, PID namespace and PID, so that a replica of the same
//! host can tell a dead holder from a live one.

/// This process's name in the lease: host, boot, PID namespace and PID, plus a random part.
pub(super) fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!(
        "{host}/{}/{}/{}",
        machine_scope(),
        std::process::id(),
        hex::encode(r)
    )
}

/// What two processes must share for one to tell whether the other's PID is alive: the boot
/// and the PID namespace.
fn machine_scope() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().chars().take(8).collect::<String>())
        .unwrap_or_default();
    let pidns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|p| {
            p.to_str()
                .and_then(|s| s.strip_prefix("pid:["))
                .map(|s| s.trim_end_matches(']').to_string())
        })
        .unwrap_or_default();
    format!("{boot}-{pidns}")
}

/// Whether `holder` names a process of this host (same boot, same PID namespace) that no longer
/// exists (or is a zombie).
pub(super) fn holder_is_dead_here(holder: &str) -> bool {
    let mut parts = holder.rsplitn(3, '/');
    let (_, pid, rest) = (parts.next(), parts.next(), parts.next());
    let (Some(pid), Some(rest)) = (pid, rest) else {
        return false;
    };
    let Some(scope) = rest.rsplit('/').next() else {
        return false;
    };
    if scope != machine_scope() || pid.parse::<u32>().is_err() {
        return false;
    }
    // Gone, or a zombie its parent has not reaped yet: either way it holds nothing any more.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_holder_is_dead_only_when_its_process_here_is_gone() {
        let me = holder_id();
        assert!(!holder_is_dead_here(&me), "{me}: this process is alive");
        let scope = machine_scope();
        // A PID that cannot exist (above pid_max) on this host: dead.
        assert!(holder_is_dead_here(&format!("h/{scope}/4194305/abcd")));
        // Another boot or PID namespace: unknown, so alive until its lease expires.
        assert!(!holder_is_dead_here("h/other-4026531836/4194305/abcd"));
        assert!(!holder_is_dead_here(""));
        assert!(!holder_is_dead_here("garbage"));
        // A zombie (killed, not yet reaped) holds nothing.
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !holder_is_dead_here(&format!("h/{scope}/{pid}/abcd")) {
            assert!(
                Instant::now() < deadline,
                "the exited child never read as dead"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
    }
}
