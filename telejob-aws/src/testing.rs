//! Test support (feature `testing`): a local AWS endpoint — moto's server — started on a free
//! loopback port, with helpers to prepare buckets and read back what the SDK clients did.
//!
//! moto is looked for at `$TELEJOB_MOTO_SERVER`, then `.venv/bin/moto_server` in this directory
//! or any parent (`.ci/run` installs it there), then on `PATH`. When it is missing, [`Moto::start`]
//! returns `None` so tests can skip — unless `TELEJOB_REQUIRE_MOTO=1`, when it panics.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

use crate::config::AwsOptions;

/// A running moto server, killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    endpoint: String,
    python: PathBuf,
}

fn find_moto() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TELEJOB_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let mut dir = std::env::current_dir().ok();
    while let Some(d) = dir {
        let c = d.join(".venv/bin/moto_server");
        if c.is_file() {
            return Some(c);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("moto_server"))
            .find(|p| p.is_file())
    })
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers. `None` when moto is not
    /// installed and not required.
    pub fn start() -> Option<Self> {
        let required = std::env::var("TELEJOB_REQUIRE_MOTO").is_ok_and(|v| v == "1");
        let Some(bin) = find_moto() else {
            assert!(
                !required,
                "TELEJOB_REQUIRE_MOTO=1 but moto_server was not found: run .ci/run or \
                 `python3 -m venv .venv && .venv/bin/pip install 'moto[server]'`"
            );
            eprintln!("moto_server not found: skipping (install it with .ci/run)");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let python = bin.with_file_name("python");
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            python,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto_server did not listen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(moto)
    }

    /// The endpoint URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The settings that point the SDK clients at this server, with fixed test credentials.
    pub fn aws(&self) -> AwsOptions {
        AwsOptions::region("us-east-1")
            .with_endpoint(&self.endpoint)
            .with_credentials(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "moto",
            )))
    }

    /// Environment for a child process (an agent) to reach this server through the standard
    /// credential chain, as an instance profile would provide it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Runs a Python snippet with `boto3` imported and `s3`, `ec2`, `iam` clients bound to this
    /// server; returns its standard output.
    pub fn boto3(&self, code: &str) -> String {
        let prelude = format!(
            "import boto3, json\n\
             kw = dict(endpoint_url={e:?}, region_name='us-east-1', \
             aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             s3 = boto3.client('s3', **kw)\nec2 = boto3.client('ec2', **kw)\n\
             iam = boto3.client('iam', **kw)\n",
            e = self.endpoint
        );
        let out = telejob_core::testing::output_of(
            Command::new(&self.python)
                .arg("-c")
                .arg(format!("{prelude}{code}")),
            "boto3 snippet",
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates buckets.
    pub fn create_buckets(&self, names: &[&str]) {
        let code: String = names
            .iter()
            .map(|n| format!("s3.create_bucket(Bucket={n:?})\n"))
            .collect();
        self.boto3(&code);
    }

    /// Creates the role runs' credentials come from (`[ec2] run_role`) and returns its ARN.
    pub fn run_role(&self) -> String {
        self.boto3(
            "import json\n\
             doc = json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', \
             'Principal': {'AWS': 'arn:aws:iam::123456789012:root'}, 'Action': 'sts:AssumeRole'}]})\n\
             try:\n    iam.create_role(RoleName='telejob-run', AssumeRolePolicyDocument=doc)\n\
             except iam.exceptions.EntityAlreadyExistsException:\n    pass\n\
             print(iam.get_role(RoleName='telejob-run')['Role']['Arn'])",
        )
        .trim()
        .to_string()
    }

    /// Runs a Python snippet like [`boto3`](Self::boto3), signing with `creds` instead of the
    /// test's own keys: an `sts` client as those credentials is bound too.
    pub fn boto3_as(&self, creds: &crate::RunCredentials, code: &str) -> String {
        self.boto3(&format!(
            "kw = dict(endpoint_url={e:?}, region_name='us-east-1', aws_access_key_id={k:?}, \
             aws_secret_access_key={s:?}, aws_session_token={t:?})\n\
             s3 = boto3.client('s3', **kw)\nsts = boto3.client('sts', **kw)\n{code}",
            e = self.endpoint,
            k = creds.access_key_id,
            s = creds.secret_access_key,
            t = creds.session_token,
        ))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
