//! The fallback when no cgroup can be had: the run's process group, plus every process that
//! carries the run's marker in its environment, plus all their descendants.
//!
//! This finds processes that left the process group (`setsid`, double fork, `nohup … & disown`)
//! as long as they keep the environment they inherited. It cannot find a process that cleared
//! its environment (`env -i`) *and* was re-parented away from the run's tree; SECURITY.md says so.

use std::collections::{BTreeSet, HashMap};
use std::fs;

/// Finds a run's processes by `/proc` scanning.
#[derive(Debug, Clone)]
pub struct ProcessTracker {
    pgid: i32,
    /// `TELEJOB_RUN_ID=<id>` as it appears in `/proc/<pid>/environ`.
    marker: Vec<u8>,
}

impl ProcessTracker {
    /// Tracks the process group `pgid` (the job's main pid) and the processes marked with `run_id`.
    pub fn new(pgid: i32, run_id: &str) -> Self {
        Self {
            pgid,
            marker: format!("TELEJOB_RUN_ID={run_id}").into_bytes(),
        }
    }

    /// The job's process group id (its main pid).
    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Every live (non-zombie) process of the run.
    pub fn pids(&self) -> BTreeSet<i32> {
        let me = std::process::id() as i32;
        let mut parents: HashMap<i32, Vec<i32>> = HashMap::new();
        let mut found = BTreeSet::new();
        let Ok(dir) = fs::read_dir("/proc") else {
            return found;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Some((state, ppid, pgrp)) = stat(pid) else {
                continue;
            };
            if state == 'Z' || state == 'X' {
                continue;
            }
            parents.entry(ppid).or_default().push(pid);
            if pgrp == self.pgid || pid == self.pgid || self.is_marked(pid) {
                found.insert(pid);
            }
        }
        // Add descendants of everything found.
        let mut todo: Vec<i32> = found.iter().copied().collect();
        while let Some(p) = todo.pop() {
            for c in parents.get(&p).into_iter().flatten() {
                if found.insert(*c) {
                    todo.push(*c);
                }
            }
        }
        found
    }

    fn is_marked(&self, pid: i32) -> bool {
        let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
            return false;
        };
        env.split(|b| *b == 0)
            .any(|kv| kv == self.marker.as_slice())
    }

    /// Signals the process group and every tracked process. Returns how many were signalled.
    pub fn signal(&self, sig: i32) -> usize {
        // SAFETY: kill(2) on a process group id we created; no memory is involved.
        unsafe { libc::kill(-self.pgid, sig) };
        let pids = self.pids();
        for pid in &pids {
            // SAFETY: as above, for one pid.
            unsafe { libc::kill(*pid, sig) };
        }
        pids.len()
    }
}

/// Kills every live process that carries run `run_id`'s marker, and their descendants (used at
/// restart for runs an earlier telejob process left behind). Returns how many were found.
pub fn kill_marked(run_id: &str) -> usize {
    // A process group id no process can have: only marked processes and descendants match.
    let t = ProcessTracker::new(i32::MAX, run_id);
    let pids = t.pids();
    for pid in &pids {
        // SAFETY: kill(2) on a pid found by its marker; no memory is involved.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    pids.len()
}

/// (state, ppid, pgrp) from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or parentheses: split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}
