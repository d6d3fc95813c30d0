//! Per-run credentials. An EC2 run is root of its own instance, so whatever credentials the
//! instance holds, the job holds too: runs get no instance profile. Instead the server assumes
//! `[ec2] run_role` once per run through STS with a **session policy** that allows nothing but
//! that run's own objects — read its staged code, write its records (`<job>/runs/<run>/*`) and
//! publish its data (`<job>/data/*`, in the private store for a private job) — for the run's
//! timeout plus the margin. The effective permissions are the intersection of the role's policy
//! and the session policy, so even a broad role yields credentials scoped to one run.
//!
//! Why STS and not pre-signed URLs: a run's output files are not known when it is launched, and
//! a pre-signed PUT names one key; S3's POST policies could allow a prefix but have no
//! maintained Rust implementation, and they would not cover multipart uploads. Session
//! credentials work with the same S3 client as every other run.
//!
//! The credentials travel as a JSON object in the private store, fetched at boot through a
//! pre-signed URL (user data, which the whole account can read with
//! `ec2:DescribeInstanceAttribute`, holds only URLs that expire).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use telejob_core::job::Visibility;
use telejob_core::run::{RunRequest, keys};
use telejob_core::{Error, Result};

pub use crate::credentials::RunCredentials;
use crate::s3::S3Store;

/// The shortest and longest sessions STS grants (AssumeRole's `DurationSeconds`). A session
/// also ends at the role's own `MaxSessionDuration` (1 h unless raised, up to 12 h), and at 1 h
/// when the server itself runs on assumed-role credentials (role chaining).
pub const SESSION_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(900), Duration::from_secs(12 * 3600));

/// The AWS partition of `region` (ARNs differ in China and GovCloud).
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The ARN of the objects under `key_prefix` of `store` (its own prefix included), `*` appended.
fn objects(store: &S3Store, key_prefix: &str) -> String {
    format!(
        "arn:{}:s3:::{}/{}{key_prefix}*",
        partition(store.region()),
        store.bucket(),
        store.prefix()
    )
}

/// The session policy of run `req`: what its credentials may do, and nothing else.
/// `public` and `private` are the server's stores.
pub fn session_policy(public: &S3Store, private: &S3Store, req: &RunRequest) -> Value {
    let output = match req.visibility {
        Visibility::Public => public,
        Visibility::Private => private,
    };
    let run_prefix = keys::run_prefix(&req.job, &req.run_id);
    let mut write = vec![
        objects(private, &run_prefix),
        objects(output, &keys::data_prefix(&req.job)),
    ];
    // The manifest sits next to the data, under the run's prefix of the output store.
    let manifest = objects(output, &run_prefix);
    if !write.contains(&manifest) {
        write.push(manifest);
    }
    let mut statements = vec![json!({
        "Sid": "WriteTheRunsRecordsAndData",
        "Effect": "Allow",
        "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
        "Resource": write,
    })];
    // Code staged in the private store is read with these credentials; code at a URL is
    // fetched over HTTP without them.
    if let Some(key) = req.code.strip_prefix("store:") {
        statements.push(json!({
            "Sid": "ReadTheRunsCode",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": [format!(
                "arn:{}:s3:::{}/{}{key}",
                partition(private.region()),
                private.bucket(),
                private.prefix()
            )],
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// How long runs' credentials last: their timeout plus `margin`, within [`SESSION_BOUNDS`].
pub fn lifetime(margin: Duration) -> telejob_core::compute::CredentialLifetime {
    telejob_core::compute::CredentialLifetime {
        margin,
        min: SESSION_BOUNDS.0,
        max: SESSION_BOUNDS.1,
    }
}

/// How long run `req`'s credentials last: its timeout plus `margin`, within
/// [`SESSION_BOUNDS`].
pub fn session_length(req: &RunRequest, margin: Duration) -> Duration {
    lifetime(margin).for_timeout(req.timeout)
}

/// The session name of run `req` (shown in CloudTrail as `assumed-role/<role>/<name>`).
fn session_name(req: &RunRequest) -> String {
    format!("telejob-{}", req.run_id).chars().take(64).collect()
}

/// Assumes `role` for run `req` with `policy` for `length`.
///
/// # Errors
///
/// [`Error::Compute`] when STS refuses (the server may not assume the role, or `length` is
/// beyond the role's maximum session duration: the message says which setting to change).
pub(crate) async fn assume(
    sts: &aws_sdk_sts::Client,
    role: &str,
    req: &RunRequest,
    policy: &Value,
    length: Duration,
) -> Result<RunCredentials> {
    let out = sts
        .assume_role()
        .role_arn(role)
        .role_session_name(session_name(req))
        .policy(policy.to_string())
        .duration_seconds(i32::try_from(length.as_secs()).unwrap_or(i32::MAX))
        .send()
        .await
        .map_err(|e| {
            let e = super::api::classify(e);
            let hint = if e.message.contains("DurationSeconds") {
                format!(
                    " (the run needs credentials for {} s: raise the role's MaxSessionDuration, \
                     or shorten the job's timeout)",
                    length.as_secs()
                )
            } else {
                " (check [ec2] run_role and that the server may sts:AssumeRole it)".into()
            };
            Error::Compute {
                op: "assume the run role",
                reason: format!("{}{hint}", e.message),
                retryable: e.retryable,
                source: None,
            }
        })?;
    let c = out.credentials().ok_or_else(|| Error::Compute {
        op: "assume the run role",
        reason: "STS returned no credentials".into(),
        retryable: true,
        source: None,
    })?;
    let expires = DateTime::from_timestamp(c.expiration().secs(), 0).unwrap_or_else(Utc::now);
    Ok(RunCredentials {
        access_key_id: c.access_key_id().to_string(),
        secret_access_key: c.secret_access_key().to_string(),
        session_token: c.session_token().to_string(),
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use telejob_core::job::JobName;
    use telejob_core::run::RunId;

    async fn store(url: &str, region: &str) -> S3Store {
        crate::S3StoreBuilder::from_url(url)
            .expect("url")
            .with_aws(crate::AwsOptions::region(region).with_endpoint("http://127.0.0.1:9"))
            .build()
            .await
            .expect("store")
    }

    fn req(code: &str, visibility: Visibility) -> RunRequest {
        let mut r = RunRequest::new(JobName::new("slowsql").expect("name"), code, "./run.sh");
        r.run_id = RunId::parse("r-0001").expect("id");
        r.visibility = visibility;
        r.timeout = Duration::from_secs(600);
        r
    }

    /// The session policy of a run of `code` with `visibility`, between `s3://pub/` and
    /// `private`, in `region`.
    async fn policy(region: &str, private: &str, code: &str, visibility: Visibility) -> Value {
        let (public, private) = (
            store("s3://pub/", region).await,
            store(private, region).await,
        );
        session_policy(&public, &private, &req(code, visibility))
    }

    fn resources(policy: &Value, sid: &str) -> Vec<String> {
        policy["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .find(|s| s["Sid"] == sid)
            .map(|s| {
                s["Resource"]
                    .as_array()
                    .expect("resources")
                    .iter()
                    .map(|r| r.as_str().expect("arn").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_public_runs_policy_reaches_its_records_its_data_and_its_code_only() {
        let p = policy(
            "us-east-1",
            "s3://priv/telejob/",
            "store:slowsql/runs/r-0001/code.tar.gz",
            Visibility::Public,
        )
        .await;
        assert_eq!(
            resources(&p, "WriteTheRunsRecordsAndData"),
            [
                "arn:aws:s3:::priv/telejob/slowsql/runs/r-0001/*",
                "arn:aws:s3:::pub/slowsql/data/*",
                "arn:aws:s3:::pub/slowsql/runs/r-0001/*",
            ]
        );
        assert_eq!(
            resources(&p, "ReadTheRunsCode"),
            ["arn:aws:s3:::priv/telejob/slowsql/runs/r-0001/code.tar.gz"]
        );
        // Nothing but allows, and no wildcard action, bucket or listing.
        let text = p.to_string();
        for absent in [
            "Deny",
            "s3:*",
            "ListBucket",
            "DeleteObject",
            "arn:aws:s3:::pub/*",
        ] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
    }

    #[tokio::test]
    async fn a_private_runs_data_stays_in_the_private_store_and_url_code_needs_no_read() {
        let p = policy(
            "cn-north-1",
            "s3://priv/",
            "https://example.com/c.tgz",
            Visibility::Private,
        )
        .await;
        assert_eq!(
            resources(&p, "WriteTheRunsRecordsAndData"),
            [
                "arn:aws-cn:s3:::priv/slowsql/runs/r-0001/*",
                "arn:aws-cn:s3:::priv/slowsql/data/*",
            ]
        );
        assert!(resources(&p, "ReadTheRunsCode").is_empty());
        assert!(!p.to_string().contains(":::pub/"), "{p}");
    }

    #[test]
    fn sessions_last_the_timeout_and_the_margin_within_stss_bounds() {
        let mut r = req("store:k", Visibility::Public);
        assert_eq!(
            session_length(&r, Duration::from_secs(900)),
            Duration::from_secs(1500)
        );
        r.timeout = Duration::from_secs(1);
        assert_eq!(session_length(&r, Duration::ZERO), SESSION_BOUNDS.0);
        r.timeout = Duration::from_secs(48 * 3600);
        assert_eq!(session_length(&r, Duration::ZERO), SESSION_BOUNDS.1);
        assert_eq!(session_name(&r), "telejob-r-0001");
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let c = RunCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: "t0ken".into(),
            expires: Utc::now(),
        };
        let d = format!("{c:?}");
        assert!(d.contains("ASIAEXAMPLE") && !d.contains("s3cr3t") && !d.contains("t0ken"));
    }
}
