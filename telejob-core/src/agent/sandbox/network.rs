//! The run's network. Every run has a network namespace of its own: with `limits.network =
//! off` it holds loopback only; with `on` it gets outbound access through **pasta** (Debian's
//! `passt`), a user-space network stack that attaches to the namespace from outside and
//! carries the run's TCP, UDP and ICMP through ordinary sockets of the host.
//!
//! pasta rather than `slirp4netns` or a veth pair with NAT: it needs no routing, forwarding or
//! NAT set up on the host (a veth pair needs `ip_forward` and masquerading, which change the
//! whole host), it copies the host's addresses and routes so that DNS works as on the host, it
//! carries IPv6, and it is faster than slirp4netns (L4 translation rather than a TCP/IP stack
//! per packet). The namespace is made when the run is prepared (`make_netns`, owned by the
//! run's user namespace) and pasta attaches to it then, through descriptors, while the code is
//! fetched and unpacked: its start is off the run's critical path. It forwards nothing into the namespace (`-t none -u none`), so no run can reach
//! another's listeners, and the gateway is not mapped to the host (`--no-map-gw`).
//!
//! What pasta connects to on the run's behalf is filtered on the host: pasta runs in the cgroup
//! `telejob-net/<run>` of the cgroup v2 hierarchy, and an nftables table `inet telejob`
//! (installed once, at the first run with network on) rejects what sockets of that cgroup send
//! to this host's own addresses (its loopback, the server's port, every address of the host),
//! to link-local addresses (the cloud metadata service at 169.254.169.254) and to broadcast
//! and multicast — except DNS to the host's configured resolvers. Other runs are unreachable:
//! nothing is forwarded into any run's namespace.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::cgroup;

/// The cgroup (below telejob's own cgroup v2) pasta processes run in.
const NET_CGROUP: &str = "telejob-net";

/// Where `pasta` is looked for.
const PASTA: [&str; 2] = ["/usr/bin/pasta", "/usr/local/bin/pasta"];

/// Why outbound networking cannot be given to runs on this host, if it cannot.
pub fn outbound_unavailable() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        if pasta().is_none() {
            return Some(
                "pasta is not installed (Debian's passt package); install it, or set limits.network = off"
                    .into(),
            );
        }
        if let Err(e) = install_filter() {
            return Some(format!(
                "the host filter of runs' traffic cannot be installed: {e}; install nftables, or set limits.network = off"
            ));
        }
        None
    })
    .clone()
}

fn pasta() -> Option<&'static str> {
    PASTA.into_iter().find(|p| Path::new(p).exists())
}

/// The cgroup of pasta processes, and its path as nftables writes it (relative to
/// `/sys/fs/cgroup`) and its level in the hierarchy.
fn net_cgroup() -> io::Result<(PathBuf, String, usize)> {
    let base = cgroup::v2_base()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup v2 hierarchy"))?;
    let mount = cgroup::cgroup2_mount()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup v2 hierarchy"))?;
    let dir = base.join(NET_CGROUP);
    std::fs::create_dir_all(&dir)?;
    let level = dir
        .strip_prefix(&mount)
        .map(|p| p.components().count())
        .map_err(|_| io::Error::other("the cgroup is not below the cgroup v2 mount"))?;
    let nft_path = dir
        .strip_prefix("/sys/fs/cgroup")
        .map_err(|_| io::Error::other("cgroup v2 is not mounted below /sys/fs/cgroup"))?
        .display()
        .to_string();
    Ok((dir, nft_path, level))
}

/// The nameservers of `/etc/resolv.conf`.
fn nameservers() -> Vec<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

/// The nftables table (see the module's documentation).
fn ruleset(nft_path: &str, level: usize) -> String {
    let from = format!("socket cgroupv2 level {level} \"{nft_path}\"");
    let mut rules = String::new();
    for ns in nameservers() {
        let family = if ns.contains(':') { "ip6" } else { "ip" };
        rules.push_str(&format!(
            "    {from} {family} daddr {ns} th dport 53 accept\n"
        ));
    }
    rules.push_str(&format!(
        "    {from} fib daddr type {{ local, broadcast, multicast }} reject\n\
         \x20   {from} ip daddr {{ 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 }} reject\n\
         \x20   {from} ip6 daddr {{ ::1, fe80::/10, ff00::/8 }} reject\n"
    ));
    format!(
        "table inet telejob {{}}\nflush table inet telejob\ntable inet telejob {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n"
    )
}

fn install_filter() -> io::Result<()> {
    let (_, nft_path, level) = net_cgroup()?;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset(&nft_path, level).as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A network namespace owned by the run's user namespace `userns`, made before the run's
/// processes exist (so that pasta can start while the code is fetched and unpacked): a holder
/// process enters `userns`, unshares a network namespace, and this process keeps a handle to it.
///
/// # Errors
///
/// When the kernel refuses the namespace.
pub(crate) fn make_netns(userns: &OwnedFd) -> io::Result<OwnedFd> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("cat");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let fd = userns.as_raw_fd();
    // SAFETY: setns(2) and unshare(2) between fork and exec, on an fd opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWUSER) != 0 || libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut holder = cmd.spawn()?;
    let netns = std::fs::File::open(format!("/proc/{}/ns/net", holder.id())).map(OwnedFd::from);
    // Closing its stdin ends the holder; the namespace lives on in the handle.
    drop(holder.stdin.take());
    let _ = holder.kill();
    let _ = holder.wait();
    netns
}

/// pasta attached to one run's network namespace; stopped (with its cgroup) when dropped.
#[derive(Debug)]
pub(crate) struct Pasta {
    cgroup: PathBuf,
}

impl Pasta {
    /// Attaches pasta to the run's user and network namespaces (`userns`, `netns`: descriptors
    /// telejob opened, handed to pasta as `/proc/self/fd/N`, so that pasta needs no access to
    /// the run's processes and can start before the init has exec'd) and returns once the run's
    /// interface is configured.
    ///
    /// # Errors
    ///
    /// When outbound networking is unavailable here ([`outbound_unavailable`]) or pasta fails
    /// (its message says why).
    pub(crate) fn attach(run: &str, userns: &OwnedFd, netns: &OwnedFd) -> io::Result<Self> {
        if let Some(why) = outbound_unavailable() {
            return Err(io::Error::new(io::ErrorKind::Unsupported, why));
        }
        let pasta = pasta().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let (dir, _, _) = net_cgroup()?;
        let cgroup = dir.join(run);
        std::fs::create_dir_all(&cgroup)?;
        let me = Self { cgroup };
        let procs: OwnedFd = std::fs::OpenOptions::new()
            .write(true)
            .open(me.cgroup.join("cgroup.procs"))?
            .into();
        let mut cmd = Command::new(pasta);
        cmd.args(["--config-net", "--no-map-gw", "-q"])
            .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
            // pasta drops to nobody unless told otherwise, and nobody cannot join the run's
            // namespaces; it still gives up its capabilities and sandboxes itself.
            .args(["--runas", "0:0"])
            .arg("--userns")
            .arg(format!("/proc/self/fd/{}", userns.as_raw_fd()))
            .arg("--netns")
            .arg(format!("/proc/self/fd/{}", netns.as_raw_fd()))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // A file, not a pipe: the daemon that stays may keep its copy of stderr.
        let mut err = tempfile::tempfile()?;
        cmd.stderr(err.try_clone()?);
        let fd = procs.as_raw_fd();
        let keep = [userns.as_raw_fd(), netns.as_raw_fd()];
        // SAFETY: write(2) of a constant to an fd opened before the fork, and fcntl(2) on fds
        // opened before it: both async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::write(fd, b"0\n".as_ptr().cast(), 2) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // pasta opens the namespaces through these: they must survive its exec.
                for k in keep {
                    if libc::fcntl(k, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        // pasta forks into the background once the namespace's interface is up: its first
        // process exiting 0 means ready.
        let status = cmd
            .status()
            .map_err(|e| io::Error::new(e.kind(), format!("pasta: {e}")))?;
        if !status.success() {
            use std::io::{Read, Seek};
            let mut text = String::new();
            let _ = err.rewind();
            let _ = err.read_to_string(&mut text);
            return Err(io::Error::other(format!("pasta: {}", text.trim())));
        }
        Ok(me)
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        cgroup::kill_and_remove(&self.cgroup);
    }
}

/// Kills the pasta of run `run` left by a process that crashed. Returns whether there was one.
pub(crate) fn kill_leftover(run: &str) -> bool {
    net_cgroup().is_ok_and(|(dir, _, _)| cgroup::kill_and_remove(&dir.join(run)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_rejects_the_host_and_link_local_but_lets_dns_through() {
        let r = ruleset("unified/telejob-net", 1);
        assert!(
            r.contains("socket cgroupv2 level 1 \"unified/telejob-net\""),
            "{r}"
        );
        assert!(
            r.contains("fib daddr type { local, broadcast, multicast } reject"),
            "{r}"
        );
        assert!(r.contains("169.254.0.0/16"), "{r}");
        assert!(r.contains("fe80::/10"), "{r}");
        assert!(
            r.starts_with("table inet telejob {}\nflush table inet telejob\n"),
            "{r}"
        );
        for ns in nameservers() {
            assert!(r.contains(&format!("daddr {ns} th dport 53 accept")), "{r}");
        }
    }
}
