//! The user data script an instance boots with: fetch the `telejob` binary and the run request
//! through pre-signed URLs, run `telejob agent` (the same pipeline as every other run), power off.
//! It holds no secret: the URLs expire and grant reading two objects; the agent's own access to
//! the stores comes from the instance profile.

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
}

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
        "./telejob agent --request request.json --public {} --private {}",
        sh_quote(b.public_url),
        sh_quote(b.private_url)
    );
    if let Some(e) = b.s3_endpoint {
        agent.push_str(&format!(" --s3-endpoint {}", sh_quote(e)));
    }
    if let Some(r) = b.s3_region {
        agent.push_str(&format!(" --s3-region {}", sh_quote(r)));
    }
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
# Jobs run as nobody: keep them away from instance metadata (the instance profile's credentials).
if command -v iptables >/dev/null 2>&1; then
  iptables -I OUTPUT -d 169.254.169.254 -m owner --uid-owner nobody -j REJECT || finish 1
fi
{agent}
finish $?
"#,
        run = b.run_id,
        job = b.job,
        agent_url = sh_quote(b.agent_url),
        request_url = sh_quote(b.request_url),
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

    #[test]
    fn script_has_the_dead_man_switch_and_no_credentials() {
        let s = script(&Bootstrap {
            run_id: "r1",
            job: "j",
            agent_url: "https://b.s3/agent?X-Amz-Signature=1&a=b",
            request_url: "https://b.s3/req?X-Amz-Signature=2",
            public_url: "s3://pub/",
            private_url: "s3://priv/p/",
            s3_endpoint: None,
            s3_region: Some("eu-west-1"),
            dead_man: Duration::from_secs(61),
        });
        assert!(s.contains("shutdown -h +2 "), "{s}");
        assert!(s.contains("--s3-region 'eu-west-1'"), "{s}");
        assert!(!s.contains("--s3-endpoint"), "{s}");
        assert!(!s.contains("AWS_SECRET"), "{s}");
        let out = std::process::Command::new("bash")
            .args(["-n", "-c", &s])
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
