//! The user data script an instance boots with: fetch the `telejob` binary, the run request and
//! the run's own credentials through pre-signed URLs, keep everything on the instance away from
//! instance metadata, run `telejob agent` (the same pipeline as every other run; the job is
//! root of the instance), power off. It holds no secret: the URLs expire and grant reading three
//! objects; the credentials reach only this run's objects (see `session`).

use std::time::Duration;

/// What the bootstrap script needs.
#[derive(Debug, Clone)]
pub(crate) struct Bootstrap<'a> {
    /// The run, for the header comment.
    pub run_id: &'a str,
    /// The job, for the header comment.
    pub job: &'a str,
    /// Pre-signed GET URL of the `telejob` binary.
    pub agent_url: &'a str,
    /// Pre-signed GET URL of the run request (JSON).
    pub request_url: &'a str,
    /// Pre-signed GET URL of the run's credentials (JSON).
    pub credentials_url: &'a str,
    /// `s3://bucket/prefix` of the public store.
    pub public_url: &'a str,
    /// `s3://bucket/prefix` of the private store.
    pub private_url: &'a str,
    /// A custom S3 endpoint the agent must use, if any.
    pub s3_endpoint: Option<&'a str>,
    /// The S3 region the agent must use, if known.
    pub s3_region: Option<&'a str>,
    /// The machine powers itself off after this long, whatever happens.
    pub dead_man: Duration,
    /// Run the job even where neither `iptables` nor `nft` can keep it from instance metadata.
    pub allow_metadata_access: bool,
}

/// Why a run is refused on an image without a firewall tool.
const NO_FIREWALL: &str = "neither iptables nor nft is installed on the image, so the job could \
reach instance metadata; install one in the AMI, or set [ec2] allow_metadata_access = true";

/// Quotes `s` for bash: single quotes, with embedded single quotes spelled `'\''`.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script. `${TELEJOB_WORK_ROOT:-/var/tmp}` is where it makes its working directory (tests
/// point it at a scratch directory).
pub(crate) fn script(b: &Bootstrap<'_>) -> String {
    // shutdown's +m counts whole minutes; round up, never below 1.
    let minutes = b.dead_man.as_secs().div_ceil(60).max(1);
    let mut agent = format!(
        "./telejob agent --request request.json --credentials credentials.json --public {} \
         --private {} --machine \"EC2 instance $(cat /sys/devices/virtual/dmi/id/board_asset_tag \
         2>/dev/null || hostname)\"",
        sh_quote(b.public_url),
        sh_quote(b.private_url)
    );
    if let Some(e) = b.s3_endpoint {
        agent.push_str(&format!(" --s3-endpoint {}", sh_quote(e)));
    }
    if let Some(r) = b.s3_region {
        agent.push_str(&format!(" --s3-region {}", sh_quote(r)));
    }
    let no_firewall = if b.allow_metadata_access {
        "  echo 'telejob: neither iptables nor nft: jobs can reach instance metadata (allowed by the operator)' >&2".to_string()
    } else {
        // Fail closed, and say why through the run's status.
        format!("  {agent} --refuse {}\n  finish 1", sh_quote(NO_FIREWALL))
    };
    format!(
        r#"#!/bin/bash
# telejob: run {run} of job {job}. Fetches the telejob agent and the run request, runs the job,
# powers off (the instance is launched to terminate on shutdown).
set -u
# Dead man's switch: whatever happens below, the machine powers off by then.
shutdown -h +{minutes} 'telejob: run deadline reached' || true
finish() {{ shutdown -h now 'telejob: run finished' || true; exit "$1"; }}
work=$(mktemp -d "${{TELEJOB_WORK_ROOT:-/var/tmp}}/telejob.XXXXXX") || finish 1
cd "$work" || finish 1
fetch() {{
  curl -fsSL --retry 8 --retry-connrefused --retry-delay 2 -o "$2" "$1" \
    || wget -q --tries=8 -O "$2" "$1"
}}
fetch {agent_url} telejob || finish 1
chmod 0755 telejob || finish 1
fetch {request_url} request.json || finish 1
(umask 077; fetch {credentials_url} credentials.json) || finish 1
# The job is root of this instance, which holds no instance profile; nothing here needs
# instance metadata any more (it still offers this user data): keep it out of reach.
if command -v iptables >/dev/null 2>&1; then
  iptables -I OUTPUT -d 169.254.169.254 -j REJECT || finish 1
elif command -v nft >/dev/null 2>&1; then
  nft add table inet telejob_metadata || finish 1
  nft add chain inet telejob_metadata output '{{ type filter hook output priority 0 ; }}' || finish 1
  nft add rule inet telejob_metadata output ip daddr 169.254.169.254 reject || finish 1
else
{no_firewall}
fi
{agent}
finish $?
"#,
        run = b.run_id,
        job = b.job,
        agent_url = sh_quote(b.agent_url),
        request_url = sh_quote(b.request_url),
        credentials_url = sh_quote(b.credentials_url),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes_and_metacharacters() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote("x'$(id)&y;`z`")))
            .output()
            .expect("bash");
        assert_eq!(out.stdout, b"x'$(id)&y;`z`");
    }

    /// Boots the script with only `tools` (stubs recording their arguments) and basic commands
    /// on `PATH`; returns the exit status and the calls recorded per tool.
    fn boot(allow: bool, tools: &[&str]) -> (bool, std::collections::BTreeMap<String, String>) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        let calls = dir.path().join("calls");
        std::fs::create_dir(&calls).expect("calls");
        let stub = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).expect("stub");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        let record = |name: &str| format!("echo \"$*\" >> {}/{name}", calls.display());
        for t in tools.iter().chain(&["shutdown"]) {
            stub(t, &record(t));
        }
        // curl "fetches" a stand-in agent that records how it was called.
        let agent = format!("#!/bin/bash\n{}", record("agent"));
        stub(
            "curl",
            &format!(
                "while [ $# -gt 0 ]; do [ \"$1\" = -o ] && {{ printf '%s\\n' {} > \"$2\"; }}; shift; done",
                sh_quote(&agent)
            ),
        );
        for real in ["mktemp", "chmod"] {
            let found = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| std::path::Path::new(d).join(real))
                .find(|p| p.exists())
                .expect("coreutils");
            std::os::unix::fs::symlink(found, bin.join(real)).expect("symlink");
        }
        let s = script(&Bootstrap {
            run_id: "r1",
            job: "j",
            agent_url: "https://b.s3/agent",
            request_url: "https://b.s3/req",
            credentials_url: "https://b.s3/cred",
            public_url: "s3://pub/",
            private_url: "s3://priv/",
            s3_endpoint: None,
            s3_region: None,
            dead_man: Duration::from_secs(600),
            allow_metadata_access: allow,
        });
        let out = std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg(&s)
            .env_clear()
            .env("PATH", &bin)
            .env("TELEJOB_WORK_ROOT", dir.path())
            .output()
            .expect("bash");
        let recorded = std::fs::read_dir(&calls)
            .expect("calls")
            .flatten()
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).expect("read");
                (e.file_name().to_string_lossy().into_owned(), text)
            })
            .collect();
        (out.status.success(), recorded)
    }

    #[test]
    fn without_iptables_or_nft_the_job_is_refused_with_the_reason() {
        let (ok, calls) = boot(false, &[]);
        assert!(!ok, "{calls:?}");
        let agent = calls.get("agent").expect("the agent reports the refusal");
        assert_eq!(agent.lines().count(), 1, "{agent}");
        assert!(
            agent.contains("--refuse neither iptables nor nft"),
            "{agent}"
        );
        assert!(calls["shutdown"].contains("-h now"), "{calls:?}");
    }

    #[test]
    fn the_operator_may_allow_metadata_access_without_a_firewall_tool() {
        let (ok, calls) = boot(true, &[]);
        assert!(ok, "{calls:?}");
        assert!(!calls["agent"].contains("--refuse"), "{calls:?}");
    }

    #[test]
    fn nft_blocks_metadata_where_iptables_is_missing() {
        let (ok, calls) = boot(false, &["nft"]);
        assert!(ok, "{calls:?}");
        assert!(
            calls["nft"].contains("output ip daddr 169.254.169.254 reject"),
            "{calls:?}"
        );
        assert!(!calls["agent"].contains("--refuse"), "{calls:?}");
        let (ok, calls) = boot(false, &["iptables", "nft"]);
        assert!(ok && calls.contains_key("iptables") && !calls.contains_key("nft"));
        // Every user of the instance, root (the job) included.
        assert!(
            calls["iptables"].contains("-I OUTPUT -d 169.254.169.254 -j REJECT"),
            "{calls:?}"
        );
        assert!(!calls["iptables"].contains("uid-owner"), "{calls:?}");
        // The agent runs with the run's credentials, fetched before metadata is closed.
        assert!(
            calls["agent"].contains("--credentials credentials.json"),
            "{calls:?}"
        );
    }

    #[test]
    fn script_has_the_dead_man_switch_and_no_credentials() {
        let s = script(&Bootstrap {
            run_id: "r1",
            job: "j",
            agent_url: "https://b.s3/agent?X-Amz-Signature=1&a=b",
            request_url: "https://b.s3/req?X-Amz-Signature=2",
            credentials_url: "https://b.s3/cred?X-Amz-Signature=3",
            public_url: "s3://pub/",
            private_url: "s3://priv/p/",
            s3_endpoint: None,
            s3_region: Some("eu-west-1"),
            dead_man: Duration::from_secs(61),
            allow_metadata_access: false,
        });
        assert!(s.contains("shutdown -h +2 "), "{s}");
        assert!(s.contains("--s3-region 'eu-west-1'"), "{s}");
        assert!(!s.contains("--s3-endpoint"), "{s}");
        assert!(!s.contains("AWS_SECRET"), "{s}");
        telejob_core::testing::output_of(
            std::process::Command::new("bash").args(["-n", "-c", &s]),
            "bash -n of the user data",
        );
    }
}
