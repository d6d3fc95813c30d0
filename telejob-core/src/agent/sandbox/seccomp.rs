//! The job's system call filter, installed in the job's process just before it execs (after
//! `no_new_privs`), and inherited by everything it starts. The job is root of its own
//! namespaces and may do what root does there — install packages, mount a tmpfs, `chown` — but
//! not what reaches past them. Modelled on Docker's default profile and systemd-nspawn's:
//!
//! * kernel images, modules and BPF: `kexec_load`, `kexec_file_load`, `init_module`,
//!   `finit_module`, `delete_module`, `bpf`;
//! * profiling that reads across tenants: `perf_event_open`;
//! * the kernel keyring beyond the run's own session keyring: `add_key` and `keyctl` naming
//!   the user or user-session keyring (`KEY_SPEC_USER_KEYRING`,
//!   `KEY_SPEC_USER_SESSION_KEYRING`) in any argument, `keyctl(KEYCTL_GET_PERSISTENT)` (a
//!   keyring per UID that outlives the run), `request_key`;
//! * nested user namespaces: `unshare` and `clone` with `CLONE_NEWUSER`; `clone3`, whose flags
//!   a filter cannot read, answers `ENOSYS` so that the C library falls back to `clone`;
//! * others no job needs: `userfaultfd`, `open_by_handle_at`, `name_to_handle_at`, `swapon`,
//!   `swapoff`, `reboot`, `acct`, `quotactl`, `lookup_dcookie`, `iopl`, `ioperm`,
//!   `move_pages`, `mbind`, `set_mempolicy`, `migrate_pages`, `kcmp`, `process_vm_readv`,
//!   `process_vm_writev`, `pivot_root`.
//!
//! Everything else is allowed; a denied call fails with `EPERM` (the program sees "Operation
//! not permitted"), never with a kill.

use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `KEY_SPEC_USER_KEYRING` and `KEY_SPEC_USER_SESSION_KEYRING` (`linux/keyctl.h`).
const SHARED_KEYRINGS: [i32; 2] = [-4, -5];
/// `KEYCTL_GET_PERSISTENT`.
const KEYCTL_GET_PERSISTENT: u64 = 22;

/// The denied calls that are denied whatever their arguments.
fn always_denied() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_move_pages,
        libc::SYS_mbind,
        libc::SYS_set_mempolicy,
        libc::SYS_migrate_pages,
        libc::SYS_kcmp,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pivot_root,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_lookup_dcookie, libc::SYS_iopl, libc::SYS_ioperm]);
    v
}

fn arch() -> io::Result<TargetArch> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| io::Error::other(format!("no seccomp filter for this architecture: {e:?}")))
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> io::Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(io::Error::other)
}

fn rule(c: Vec<SeccompCondition>) -> io::Result<SeccompRule> {
    SeccompRule::new(c).map_err(io::Error::other)
}

/// The two programs of the job's filter: the `EPERM` list and `clone3` → `ENOSYS`. Compiled
/// before the job's process is forked; installed with [`install`].
///
/// # Errors
///
/// On an architecture the filter does not know.
pub(crate) fn programs() -> io::Result<Vec<BpfProgram>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for s in always_denied() {
        rules.insert(s, Vec::new());
    }
    let newuser = u64::try_from(libc::CLONE_NEWUSER).unwrap_or(0);
    let flag = |arg| cond(arg, SeccompCmpOp::MaskedEq(newuser), newuser);
    rules.insert(libc::SYS_unshare, vec![rule(vec![flag(0)?])?]);
    rules.insert(libc::SYS_clone, vec![rule(vec![flag(0)?])?]);
    let keyrings = |arg| -> io::Result<Vec<SeccompRule>> {
        SHARED_KEYRINGS
            .iter()
            .map(|k| rule(vec![cond(arg, SeccompCmpOp::Eq, u64::from(*k as u32))?]))
            .collect()
    };
    rules.insert(libc::SYS_add_key, keyrings(4)?);
    let mut keyctl = keyrings(1)?;
    keyctl.extend(keyrings(2)?);
    keyctl.extend(keyrings(3)?);
    keyctl.push(rule(vec![cond(
        0,
        SeccompCmpOp::Eq,
        KEYCTL_GET_PERSISTENT,
    )?])?);
    rules.insert(libc::SYS_keyctl, keyctl);
    let arch = arch()?;
    let eperm = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(io::Error::other)?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(io::Error::other)?;
    Ok(vec![
        eperm.try_into().map_err(io::Error::other)?,
        clone3.try_into().map_err(io::Error::other)?,
    ])
}

/// Installs `programs` on this thread (the job's process is single-threaded). `no_new_privs`
/// must be set.
///
/// # Errors
///
/// When the kernel refuses a filter.
pub(crate) fn install(programs: &[BpfProgram]) -> io::Result<()> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(io::Error::other)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filtered_process_cannot_load_bpf_or_make_a_user_namespace_but_can_fork() {
        let programs = programs().expect("filter");
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args([
            "-c",
            "unshare -U true 2>/dev/null && echo userns; (exit 0) && echo forked",
        ]);
        // SAFETY: prctl and seccomp between fork and exec; the programs were built before.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                install(&programs)
            });
        }
        let out = cmd.output().expect("sh");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("userns"),
            "a nested user namespace was made: {text}"
        );
        assert!(text.contains("forked"), "{text}");
    }
}
