//! `telejob run --compute ec2` against a local AWS endpoint (moto): the instance is launched and
//! recorded, and its user data — read back from the endpoint — is executed here in a scratch
//! directory, as cloud-init would on the instance. The job runs through `telejob agent` and its
//! output and manifest land in S3: what proves an EC2 run works. Then: a run that never reports
//! is terminated at its deadline.
//!
//! Built only with the `ec2` feature (`.ci/run` passes `--features telejob-server/ec2`): the
//! default binary has no EC2.
#![cfg(feature = "ec2")]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use telejob_aws::testing::Moto;
use telejob_aws::{Ec2ComputeBuilder, Ec2Settings, S3StoreBuilder};
use telejob_e2e::{Api, assert_refused, tarball, telejob_bin, write_script_tarball};

fn write_config(dir: &Path, moto: &Moto, ami: &str, margin: u64) -> std::path::PathBuf {
    let cfg = dir.join("aws.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"public_store = "s3://pub/"
private_store = "s3://priv/telejob/"

[aws]
region = "us-east-1"
endpoint = "{endpoint}"

[ec2]
ami = "{ami}"
instance_type = "t3.micro"
allowed_instance_types = ["t3.micro"]
margin_seconds = {margin}
poll_seconds = 1
agent_binary = "{bin}"
run_role = "{role}"

[notify]
allow_private_targets = true   # the tests' webhooks are on loopback
"#,
            endpoint = moto.endpoint(),
            role = moto.run_role(),
            bin = telejob_bin!().display(),
        ),
    )
    .expect("config");
    cfg
}

/// [`write_config`] for a server whose runs go to EC2, with the settings `head` (lines of TOML)
/// first.
fn server_config(dir: &Path, moto: &Moto, ami: &str, head: &str) -> std::path::PathBuf {
    let cfg = write_config(dir, moto, ami, 600);
    let text = std::fs::read_to_string(&cfg).expect("cfg");
    std::fs::write(&cfg, format!("compute = \"ec2\"\n{head}{text}")).expect("cfg");
    cfg
}

fn setup() -> Option<(Moto, String, tempfile::TempDir)> {
    let moto = Moto::start()?;
    moto.create_buckets(&["pub", "priv"]);
    let ami = moto
        .boto3("print(ec2.describe_images()['Images'][0]['ImageId'])")
        .trim()
        .to_string();
    Some((moto, ami, tempfile::tempdir().expect("tmp")))
}

/// [`setup`] with the configuration of `telejob run --compute ec2` written (a run margin of
/// `margin` seconds).
fn setup_run(margin: u64) -> Option<(Moto, tempfile::TempDir, std::path::PathBuf)> {
    let (moto, ami, tmp) = setup()?;
    let cfg = write_config(tmp.path(), &moto, &ami, margin);
    Some((moto, tmp, cfg))
}

/// Spawns `telejob run --compute ec2 …` with the test's AWS credentials.
fn spawn_run(
    moto: &Moto,
    dir: &Path,
    cfg: &Path,
    code: &Path,
    timeout: &str,
) -> std::process::Child {
    let mut cmd = Command::new(telejob_bin!());
    cmd.args(["run", "--compute", "ec2", "--config"])
        .arg(cfg)
        .arg("--code")
        .arg(code)
        .args(["--command", "./run.sh", "--timeout", timeout])
        .current_dir(dir)
        .env_remove("TELEJOB_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    cmd.spawn().expect("telejob run")
}

/// Waits for the instance tagged with `job` and returns its id.
fn instance_for(moto: &Moto, job: &str) -> String {
    let started = Instant::now();
    loop {
        let out = moto.boto3(&format!(
            "r = ec2.describe_instances(Filters=[{{'Name': 'tag:telejob:job', 'Values': ['{job}']}}])\n\
             print(' '.join(i['InstanceId'] for x in r['Reservations'] for i in x['Instances']))"
        ));
        if let Some(id) = out.split_whitespace().next() {
            return id.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no instance for {job}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn state_of(moto: &Moto, id: &str) -> String {
    moto.boto3(&format!(
        "print(ec2.describe_instances(InstanceIds=['{id}'])['Reservations'][0]['Instances'][0]['State']['Name'])"
    ))
    .trim()
    .to_string()
}

#[test]
fn an_ec2_run_boots_from_its_user_data_and_publishes_to_s3() {
    let Some((moto, tmp, cfg)) = setup_run(600) else {
        return;
    };
    let dir = tmp.path();
    let code = write_script_tarball(
        dir.join("bootjob-1.0.tar.gz"),
        "#!/bin/bash\nset -e\nmkdir -p output\necho \"day,$TELEJOB_JOB\" > output/result.csv\n\
             echo ran as $(id -un)\n",
    );
    let child = spawn_run(&moto, dir, &cfg, &code, "5m");
    let id = instance_for(&moto, "bootjob");

    // What the instance would boot with, read back from the endpoint.
    let user_data = moto.boto3(&format!(
        "import base64\n\
         v = ec2.describe_instance_attribute(InstanceId='{id}', Attribute='userData')['UserData']['Value']\n\
         print(base64.b64decode(v).decode())"
    ));
    assert!(user_data.starts_with("#!/bin/bash"), "{user_data}");
    assert!(
        user_data.contains("X-Amz-Signature="),
        "pre-signed URLs: {user_data}"
    );
    for secret in [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "aws_secret",
        "ASIA",
    ] {
        assert!(!user_data.contains(secret), "user data holds {secret}");
    }
    // No instance profile: the job is root of the instance.
    let profile = moto.boto3(&format!(
        "print(ec2.describe_instances(InstanceIds=['{id}'])['Reservations'][0]['Instances'][0].get('IamInstanceProfile'))"
    ));
    assert_eq!(profile.trim(), "None", "runs get no instance profile");
    // The run's own credentials, next to its request: a session of the run role, not the
    // server's keys, that expires.
    let run_prefix = moto.boto3(
        "print([o['Key'] for o in s3.list_objects_v2(Bucket='priv', Prefix='telejob/bootjob/runs/')['Contents'] if o['Key'].endswith('/request.json')][0][:-len('request.json')])",
    );
    let creds: telejob_aws::RunCredentials = serde_json::from_str(&moto.boto3(&format!(
        "print(s3.get_object(Bucket='priv', Key='{}credentials.json')['Body'].read().decode())",
        run_prefix.trim()
    )))
    .expect("run credentials");
    assert!(creds.access_key_id.starts_with("ASIA"), "{creds:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        u64::try_from(creds.expires.timestamp()).expect("expiry") > now,
        "{creds:?}"
    );
    let who = moto.boto3_as(&creds, "print(sts.get_caller_identity()['Arn'])");
    assert!(
        who.contains(":assumed-role/telejob-run/telejob-"),
        "the run's session of the run role: {who}"
    );

    // Run it as cloud-init would, with stand-ins for the machine-level commands and the instance
    // profile's credentials in the environment.
    let machine = dir.join("machine");
    let mut boot = boot_command(&user_data, &machine);
    let booted = boot.output().expect("user data runs");
    assert!(
        booted.status.success(),
        "user data failed: {}\n{}",
        String::from_utf8_lossy(&booted.stdout),
        String::from_utf8_lossy(&booted.stderr)
    );
    let shutdowns =
        std::fs::read_to_string(machine.join("shutdown.calls")).expect("shutdown called");
    let calls: Vec<&str> = shutdowns.lines().collect();
    assert!(
        calls.first().is_some_and(|l| l.starts_with("-h +"))
            && calls.last().is_some_and(|l| l.starts_with("-h now")),
        "the dead-man shutdown first, the one at the end last: {shutdowns}"
    );
    let fw = std::fs::read_to_string(machine.join("iptables.calls")).unwrap_or_default();
    assert!(
        fw.contains("-d 169.254.169.254 -j REJECT") && !fw.contains("uid-owner"),
        "everything on the instance, the job as root included, is kept from metadata: {fw}"
    );

    // The CLI follows the run to its end through the status object.
    let out = child.wait_with_output().expect("telejob run ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("published 1 file"), "{stdout}");
    assert!(stdout.contains("s3://pub/bootjob/data"), "{stdout}");

    // Output and manifest in the public bucket, status and log in the private one.
    let body = moto.boto3("print(s3.get_object(Bucket='pub', Key='bootjob/data/result.csv')['Body'].read().decode(), end='')");
    assert_eq!(body, "day,bootjob\n");
    let listing = moto.boto3(
        "print('\\n'.join(o['Key'] for b in ['pub', 'priv'] for o in s3.list_objects_v2(Bucket=b).get('Contents', [])))",
    );
    for (prefix, file) in [
        ("bootjob/runs/", "/manifest.json"),
        ("telejob/bootjob/runs/", "/status.json"),
        ("telejob/bootjob/runs/", "/log.txt"),
    ] {
        assert!(
            listing
                .lines()
                .any(|k| k.starts_with(prefix) && k.ends_with(file)),
            "{prefix}…{file} in {listing}"
        );
    }
    assert!(
        !listing
            .lines()
            .any(|k| k.starts_with("bootjob/") && k.contains("log")),
        "logs stay private: {listing}"
    );
    // The job was root of its machine, and the log says what the machine is.
    let log = moto.boto3(&format!(
        "print(s3.get_object(Bucket='priv', Key='{}log.txt')['Body'].read().decode())",
        run_prefix.trim()
    ));
    assert!(
        log.starts_with("telejob: a machine of its own: EC2 instance"),
        "{log}"
    );
    assert!(log.contains("ran as root"), "{log}");
    // Nothing is left running.
    let state = state_of(&moto, &id);
    assert!(state == "terminated" || state == "shutting-down", "{state}");
}

#[test]
fn an_ec2_run_that_never_reports_is_terminated_at_its_deadline() {
    let Some((moto, tmp, cfg)) = setup_run(1) else {
        return;
    };
    let dir = tmp.path();
    let code = write_script_tarball(dir.join("stuck.tar.gz"), "#!/bin/bash\nsleep 1000\n");
    let child = spawn_run(&moto, dir, &cfg, &code, "1s");
    let id = instance_for(&moto, "stuck");
    let out = child.wait_with_output().expect("telejob run ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert!(stderr.contains("terminated"), "{stderr}");
    let state = state_of(&moto, &id);
    assert!(state == "terminated" || state == "shutting-down", "{state}");
}

#[test]
fn ec2_runs_need_s3_stores_and_an_ec2_table() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_script_tarball(tmp.path().join("x.tar.gz"), "true\n");
    let out = telejob_e2e::telejob!(
        tmp.path(),
        &["run", "--compute", "ec2", "--code", "x.tar.gz"]
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[ec2]") && err.contains("--config"), "{err}");
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "[ec2]\nami = \"ami-1\"\n").expect("cfg");
    let out = telejob_e2e::telejob!(
        tmp.path(),
        &[
            "run",
            "--compute",
            "ec2",
            "--config",
            "c.toml",
            "--code",
            "x.tar.gz"
        ]
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--publish-to") && err.contains("s3://"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn serve_on_ec2_reaps_orphaned_instances_at_start() {
    let Some((moto, ami, tmp)) = setup() else {
        return;
    };
    let dir = tmp.path();
    let cfg = server_config(dir, &moto, &ami, "");
    // An instance this launcher started before a crash, for a run nobody knows any more.
    let orphan = moto.boto3(&format!(
        "r = ec2.run_instances(ImageId='{ami}', MinCount=1, MaxCount=1, TagSpecifications=[{{'ResourceType': 'instance', 'Tags': [\
         {{'Key': 'telejob:run', 'Value': 'orphan-run'}}, {{'Key': 'telejob:job', 'Value': 'gone'}}, \
         {{'Key': 'telejob:launcher', 'Value': 'telejob'}}, {{'Key': 'telejob:deadline', 'Value': '2099-01-01T00:00:00Z'}}]}}])\n\
         print(r['Instances'][0]['InstanceId'])"
    ));
    let orphan = orphan.trim();
    let (mut server, _) = serve_ec2(&moto, dir, &cfg, "data", &[], &[]);
    let started = Instant::now();
    let mut state = state_of(&moto, orphan);
    while state == "running" && started.elapsed() < Duration::from_secs(60) {
        assert!(
            server.child.try_wait().expect("server").is_none(),
            "serve exited"
        );
        std::thread::sleep(Duration::from_millis(200));
        state = state_of(&moto, orphan);
    }
    server.kill_now();
    assert!(state == "terminated" || state == "shutting-down", "{state}");
}

/// The command that boots `user_data` as cloud-init would, in `machine` (a scratch directory),
/// with stand-ins for `shutdown` and `iptables` (they record their calls in
/// `machine/<name>.calls`) and no AWS credentials in the environment.
fn boot_command(user_data: &str, machine: &Path) -> Command {
    let bin = machine.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    for stub in ["shutdown", "iptables"] {
        let p = bin.join(stub);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}/{stub}.calls\n",
                machine.display()
            ),
        )
        .expect("stub");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let script = machine.join("user-data");
    std::fs::write(&script, user_data).expect("user data");
    let mut boot = Command::new("bash");
    boot.arg(&script)
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                bin.display()
            ),
        )
        .env("TELEJOB_WORK_ROOT", machine)
        .env("HOME", machine)
        // No credentials from the environment: the agent uses the run's own, and there is no
        // instance profile to fall back on.
        .env("AWS_EC2_METADATA_DISABLED", "true");
    boot
}

/// Stand-ins for the machines EC2 would boot: every instance that appears running gets its user
/// data executed here (in its own process group), and is killed when the instance is terminated.
struct Machines {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Machines {
    fn start(moto: Arc<Moto>, root: std::path::PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut booted: HashMap<String, std::process::Child> = HashMap::new();
            let kill = |c: &std::process::Child| {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", c.id())])
                    .stderr(Stdio::null())
                    .status();
            };
            while !flag.load(Ordering::Relaxed) {
                let listing = moto.boto3(
                    "for r in ec2.describe_instances()['Reservations']:\n    \
                     for i in r['Instances']:\n        print(i['InstanceId'], i['State']['Name'])",
                );
                for line in listing.lines() {
                    let Some((id, state)) = line.split_once(' ') else {
                        continue;
                    };
                    let alive = booted
                        .get_mut(id)
                        .map(|c| c.try_wait().ok().flatten().is_none());
                    match (state, booted.get_mut(id), alive) {
                        ("running", None, _) => {
                            let user_data = moto.boto3(&format!(
                                "import base64\n\
                                 v = ec2.describe_instance_attribute(InstanceId='{id}', Attribute='userData')['UserData']['Value']\n\
                                 print(base64.b64decode(v).decode())"
                            ));
                            let mut cmd = boot_command(&user_data, &root.join(id));
                            cmd.process_group(0)
                                .stdout(Stdio::null())
                                .stderr(Stdio::null());
                            booted.insert(id.to_string(), cmd.spawn().expect("boot"));
                        }
                        ("shutting-down" | "terminated" | "stopped", Some(child), Some(true)) => {
                            kill(child);
                            let _ = child.wait();
                        }
                        _ => {}
                    }
                }
                for child in booted.values_mut() {
                    let _ = child.try_wait();
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            for child in booted.values_mut() {
                kill(child);
                let _ = child.wait();
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `Ec2Compute` passes every compute conformance check, each of its instances booted here from
/// its user data by [`Machines`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_compute_passes_the_compute_conformance_checks() {
    let Some((moto, ami, tmp)) = setup() else {
        return;
    };
    let moto = Arc::new(moto);
    let machines = Machines::start(moto.clone(), tmp.path().join("machines"));
    let store = |url: &'static str| {
        let aws = moto.aws();
        async move {
            S3StoreBuilder::from_url(url)
                .expect("url")
                .with_aws(aws)
                .build()
                .await
                .expect("store")
        }
    };
    let (public, private) = (store("s3://pub/").await, store("s3://priv/telejob/").await);
    let mut settings = Ec2Settings::new(&ami);
    settings.instance_type = "t3.micro".into();
    settings.margin_seconds = 120;
    settings.poll_seconds = 1;
    settings.agent_binary = Some(telejob_bin!().to_path_buf());
    settings.run_role = Some(moto.run_role());
    let compute = Ec2ComputeBuilder::new(settings, public.clone(), private.clone())
        .with_aws(moto.aws())
        .build()
        .await
        .expect("compute");
    let code = tmp.path().join("sample.tar.gz");
    std::fs::write(&code, telejob_core::testing::sample_tarball()).expect("code");
    let ran = telejob_core::testing::compute_conformance(
        &compute,
        &code.display().to_string(),
        &*public,
        &*private,
    )
    .await;
    assert_eq!(ran, telejob_core::testing::COMPUTE_CHECKS);
    drop(machines);
}

/// `telejob serve` on EC2 and PostgreSQL: the replica that takes over from a killed leader
/// reattaches the leader's EC2 run (it is not interrupted) and records its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_re_adopts_the_dead_leaders_ec2_runs() {
    let Some(pg) = telejob_e2e::postgres::postgres() else {
        return;
    };
    let Some((moto, ami, tmp)) = setup() else {
        return;
    };
    let dir = tmp.path();
    let cfg = server_config(dir, &moto, &ami, "lease_seconds = 3\n");
    let url = pg.new_database();
    let key = "ab".repeat(32);
    let replica = |n: &str| {
        serve_ec2(
            &moto,
            dir,
            &cfg,
            n,
            &["--database", &url],
            &[("TELEJOB_SECRETS_KEY", key.clone())],
        )
    };
    let (mut a, a_base) = replica("a");
    let (mut b, b_base) = replica("b");
    let token = std::fs::read_to_string(dir.join("a/admin.token"))
        .expect("token")
        .trim()
        .to_string();
    let (api_a, api_b) = (
        Api::at(&a_base, Some(&token)),
        Api::at(&b_base, Some(&token)),
    );
    let role = async |api: &Api| api.get("/healthz").await.1["role"].clone();
    assert_eq!(role(&api_a).await, "leader");
    let spec = serde_json::json!({"name": "adopted", "command": "./run.sh", "output_dir": "output",
        "schedule": {"frequency": "daily", "time_of_day": "06:00"}});
    let (s, v) = api_a.post_json("/api/jobs", &spec).await;
    assert_eq!(s, 201, "{v}");
    let code = tarball(&[(
        "run.sh",
        "#!/bin/bash\nmkdir -p output\necho adopted > output/x\n",
        0o755,
    )]);
    let (s, v) = api_a.put_code("adopted", code).await;
    assert_eq!(s, 200, "{v}");
    let (s, v, _) = api_a.call("POST", "/api/jobs/adopted/runs", None).await;
    assert_eq!(s, 202, "{v}");
    let id = v["run_id"].as_str().expect("id").to_string();
    let instance = instance_for(&moto, "adopted");
    // The leader dies with its run's instance up; the other replica takes over.
    a.kill_now();
    let t0 = Instant::now();
    while role(&api_b).await != "leader" {
        assert!(t0.elapsed() < Duration::from_secs(10), "no takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, run) = api_b.get(&format!("/api/runs/{id}")).await;
    assert_ne!(run["state"], "interrupted", "{run}");
    assert_eq!(
        state_of(&moto, &instance),
        "running",
        "the reaper left it alone"
    );
    // Now the machine boots and runs the job; the new leader records the outcome.
    let moto = Arc::new(moto);
    let _machines = Machines::start(moto.clone(), dir.join("machines"));
    let run = api_b.wait_run(&id).await;
    assert_eq!(
        run["state"], "succeeded",
        "the adopted run never finished: {run}"
    );
    let log = std::fs::read_to_string(dir.join("b.log")).expect("log");
    assert!(
        log.contains(&format!("run {id} of adopted reattached")),
        "{log}"
    );
    b.kill_now();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ec2_job_chooses_an_allowed_instance_type_and_is_told_its_cost() {
    let Some((moto, ami, tmp)) = setup() else {
        return;
    };
    let dir = tmp.path();
    let cfg = write_config(dir, &moto, &ami, 600);
    let text = std::fs::read_to_string(&cfg).expect("cfg").replace(
        "allowed_instance_types = [\"t3.micro\"]",
        "allowed_instance_types = [\"t3.micro\", \"t3.small\"]",
    );
    std::fs::write(
        &cfg,
        format!("compute = \"ec2\"\n{text}\n[ec2_prices]\n\"t3.small\" = 0.25\n"),
    )
    .expect("cfg");
    let (mut child, base) = serve_ec2(&moto, dir, &cfg, "data", &[], &[]);
    let token = std::fs::read_to_string(dir.join("data/admin.token"))
        .expect("token")
        .trim()
        .to_string();
    let admin = Api::at(&base, Some(&token));
    // Outside the allowlist: refused, naming the field.
    let (s, v) = admin
        .post_json(
            "/api/jobs",
            &serde_json::json!({"name": "big", "instance_type": "m5.large"}),
        )
        .await;
    assert_refused((s, &v), 422, Some("instance_type"), "t3.small");
    // Allowed: saved, with the cost estimate from the operator's price (a daily job of 60
    // minutes: 30 runs of 62 minutes at $0.25/h is at most $7.75 a month).
    let (s, v) = admin
        .post_json(
            "/api/jobs",
            &serde_json::json!({"name": "sized", "instance_type": "t3.small", "timeout_minutes": 60,
                "command": "mkdir -p output && echo hi > output/x"}),
        )
        .await;
    assert_eq!(s, 201);
    let cost = v["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .find(|w| w["field"] == "instance_type")
        .unwrap_or_else(|| panic!("no cost estimate: {v}"));
    assert!(
        cost["message"]
            .as_str()
            .is_some_and(|m| m.contains("t3.small") && m.contains("at most $7.75 per month")),
        "{cost}"
    );
    // Its runs launch that type.
    let (s, _) = admin
        .put_code("sized", tarball(&[("run.sh", "true", 0o755)]))
        .await;
    assert_eq!(s, 200);
    let (s, _) = admin
        .post_json("/api/jobs/sized/runs", &serde_json::json!({}))
        .await;
    assert_eq!(s, 202);
    let id = instance_for(&moto, "sized");
    let kind = moto.boto3(&format!(
        "print(ec2.describe_instances(InstanceIds=['{id}'])['Reservations'][0]['Instances'][0]['InstanceType'])"
    ));
    assert_eq!(kind.trim(), "t3.small");
    // Purged while its run is in flight: the run stops, but the credentials it was given stay
    // valid for its timeout and margin, so nobody else may take the name until then.
    let (s, _, body) = admin
        .call("DELETE", "/api/jobs/sized?public_data=purge", None)
        .await;
    assert_eq!(s, 204, "{}", String::from_utf8_lossy(&body));
    let bob = telejob_e2e::token_for(telejob_bin!(), &dir.join("data"), "bob");
    let (s, v) = Api::at(&base, Some(&bob))
        .post_json("/api/jobs", &serde_json::json!({"name": "sized"}))
        .await;
    assert_refused((s, &v), 409, Some("name"), "valid until");
    let (_, v) = admin.get("/api/tombstones").await;
    let until: chrono::DateTime<chrono::Utc> = v[0]["free_after"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{v}"));
    let left = until - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(65) && left <= chrono::Duration::minutes(70),
        "60 minutes of timeout and 10 of margin from the run's start: {left}"
    );
    child.kill_now();
}

const ALICE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti alice@laptop";

/// `telejob serve` on EC2 (moto) with config `cfg`, data in `dir/<name>`, its log appended to
/// `dir/<name>.log`, and `args` and `env` more: the server and its base URL.
fn serve_ec2(
    moto: &Moto,
    dir: &Path,
    cfg: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> (telejob_e2e::Server, String) {
    let srv = telejob_e2e::ServeCommand::new(telejob_bin!(), &dir.join(name))
        .config(cfg)
        .args(args)
        .envs(moto.env().into_iter().chain(env.iter().cloned()))
        .log_to(&dir.join(format!("{name}.log")))
        .start();
    let base = srv.base.clone();
    (srv, base)
}

fn token(dir: &Path, user: &str) -> String {
    telejob_e2e::token_for(telejob_bin!(), &dir.join("data"), user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_launch_with_the_owners_key_and_end_at_their_deadline() {
    let Some((moto, ami, tmp)) = setup() else {
        return;
    };
    let dir = tmp.path();
    let cfg = server_config(
        dir,
        &moto,
        &ami,
        "worker_check_seconds = 1\nworkers_per_user = 2\n",
    );
    let (mut server, base) = serve_ec2(&moto, dir, &cfg, "data", &[], &[]);
    let (alice, bob) = (token(dir, "alice"), token(dir, "bob"));
    let (alice_api, bob_api) = (Api::at(&base, Some(&alice)), Api::at(&base, Some(&bob)));
    let (hook, events) = telejob_e2e::webhook_sink();
    // Bad input names the field and launches nothing.
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
    for (body, field) in [
        (serde_json::json!({"ssh_key": private}), "ssh_key"),
        (serde_json::json!({"ssh_key": "hello"}), "ssh_key"),
        (
            serde_json::json!({"ssh_key": ALICE_KEY, "lifetime": "25h"}),
            "lifetime",
        ),
        (
            serde_json::json!({"ssh_key": ALICE_KEY, "lifetime": "0s"}),
            "lifetime",
        ),
        (
            serde_json::json!({"ssh_key": ALICE_KEY, "instance_type": "m5.24xlarge"}),
            "instance_type",
        ),
        (
            serde_json::json!({"ssh_key": ALICE_KEY, "name": "Bad Name"}),
            "name",
        ),
    ] {
        let (s, v) = alice_api.post_json("/api/workers", &body).await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["field"], field, "{v}");
        assert!(
            !v.to_string().contains("b3BlbnNzaC1"),
            "a private key is never echoed: {v}"
        );
    }
    // A launch: tags, no instance profile, the key in user data, a ready ssh line.
    let (s, w) = alice_api.post_json("/api/workers", &serde_json::json!({"name": "dev", "ssh_key": format!("{ALICE_KEY}\n"), "lifetime": "3h",
            "notify": {"webhook": hook}}),).await;
    assert_eq!(s, 201, "{w}");
    let id = w["instance_id"].as_str().expect("instance").to_string();
    let describe = moto.boto3(&format!(
        "i = ec2.describe_instances(InstanceIds=['{id}'])['Reservations'][0]['Instances'][0]\n\
         print(sorted((t['Key'], t['Value']) for t in i['Tags']))\n\
         print(i.get('IamInstanceProfile'))\n\
         import base64\n\
         ud = ec2.describe_instance_attribute(InstanceId='{id}', Attribute='userData')['UserData']['Value']\n\
         print(base64.b64decode(ud).decode().replace('\\n', '\\\\n'))"
    ));
    let mut lines = describe.lines();
    let tags = lines.next().expect("tags");
    assert!(
        tags.contains("('telejob:worker', 'dev')")
            && tags.contains("('telejob:owner', 'alice')")
            && tags.contains("'telejob:deadline'"),
        "{tags}"
    );
    assert!(!tags.contains("telejob:run"), "not a run: {tags}");
    assert_eq!(lines.next(), Some("None"), "no instance profile");
    let user_data = lines.next().expect("user data").replace("\\n", "\n");
    // Executed here as the instance would boot it, with stand-ins for useradd, chown and
    // shutdown in a scratch root: exactly the given key, the dead-man shutdown at 24 h.
    let machine = dir.join("machine");
    let bin = machine.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    for (stub, body) in [
        (
            "shutdown",
            "echo \"$@\" >> \"$TELEJOB_WORKER_ROOT/shutdown.calls\"",
        ),
        (
            "useradd",
            "echo \"$@\" >> \"$TELEJOB_WORKER_ROOT/useradd.calls\"",
        ),
        (
            "chown",
            "echo \"$@\" >> \"$TELEJOB_WORKER_ROOT/chown.calls\"",
        ),
        ("id", "exit 1"),
    ] {
        let p = bin.join(stub);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("stub");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    telejob_core::testing::output_of(
        Command::new("bash")
            .arg("-c")
            .arg(&user_data)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("TELEJOB_WORKER_ROOT", &machine),
        "booting the worker's user data",
    );
    let keys =
        std::fs::read_to_string(machine.join("home/analyst/.ssh/authorized_keys")).expect("keys");
    assert_eq!(keys, format!("{ALICE_KEY}\n"));
    let calls = |f: &str| std::fs::read_to_string(machine.join(f)).unwrap_or_default();
    assert!(
        calls("shutdown.calls").starts_with("-h +1440 "),
        "{}",
        calls("shutdown.calls")
    );
    assert!(
        calls("useradd.calls").contains("analyst"),
        "{}",
        calls("useradd.calls")
    );
    assert!(
        std::fs::read_to_string(machine.join("etc/sudoers.d/90-telejob-analyst"))
            .expect("sudoers")
            .contains("analyst ALL=(ALL) NOPASSWD:ALL")
    );
    // Running, with an address and a ready ssh line.
    let started = Instant::now();
    let w = loop {
        let (_, w) = alice_api.get("/api/workers/dev").await;
        if w["state"] == "running" && w["ssh"].is_string() {
            break w;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{w}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        w["ssh"].as_str().expect("ssh").starts_with("ssh analyst@"),
        "{w}"
    );
    // Another user neither sees nor ends it.
    let (s, v) = bob_api.get("/api/workers/dev").await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = bob_api.delete("/api/workers/dev").await;
    assert_eq!(s, 404);
    let (_, list) = bob_api.get("/api/workers").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    // A name in use, and the per-user cap.
    let (s, v) = alice_api
        .post_json(
            "/api/workers",
            &serde_json::json!({"name": "dev", "ssh_key": ALICE_KEY}),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("name")), "{v}");
    // "brief" names no channel: its notifications go to alice's profile.
    let (s, v) = alice_api
        .put_json("/api/me", &serde_json::json!({"notify": {"webhook": hook}}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = alice_api
        .post_json(
            "/api/workers",
            &serde_json::json!({"name": "brief", "ssh_key": ALICE_KEY, "lifetime": "1m"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = alice_api
        .post_json("/api/workers", &serde_json::json!({"ssh_key": ALICE_KEY}))
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (422, Some("workers")),
        "the cap: {v}"
    );
    // Extend moves the deadline tag, within the maximum.
    let (s, v) = alice_api
        .post_json("/api/workers/dev/extend", &serde_json::json!({"by": "2h"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let deadline = v["deadline"].as_str().expect("deadline").to_string();
    let tag = moto.boto3(&format!(
        "i = ec2.describe_instances(InstanceIds=['{id}'])['Reservations'][0]['Instances'][0]\n\
         print([t['Value'] for t in i['Tags'] if t['Key'] == 'telejob:deadline'][0])"
    ));
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t.trim()).expect("time");
    assert!(
        (parse(&deadline) - parse(&tag)).num_seconds().abs() <= 1,
        "the tag says {tag}, the server {deadline}"
    );
    let (s, v) = alice_api
        .post_json("/api/workers/dev/extend", &serde_json::json!({"by": "30h"}))
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("by")), "{v}");
    // A restart (kill -9): the workers are still followed.
    server.kill_now();
    let (mut server, base2) = serve_ec2(&moto, dir, &cfg, "data", &[], &[]);
    let (_, again) = Api::at(&base2, Some(&alice)).get("/api/workers/dev").await;
    assert_eq!(again["instance_id"], id.as_str(), "{again}");
    // "brief" lives a minute: warned at once (it ends within the hour), ended at its deadline.
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(120);
    while !seen
        .iter()
        .any(|e: &serde_json::Value| e["event"] == "worker_ended")
    {
        let left = until.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no end notification: {seen:?}\n{}",
            std::fs::read_to_string(dir.join("data.log")).unwrap_or_default()
        );
        if let Ok(body) = events.recv_timeout(left.min(Duration::from_secs(5))) {
            seen.push(serde_json::from_str(&body).expect("json"));
        }
    }
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or(""),
                e["worker"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("worker_ending_soon", "brief"), ("worker_ended", "brief")],
        "{seen:?}"
    );
    let brief_id = moto.boto3(
        "r = ec2.describe_instances(Filters=[{'Name': 'tag:telejob:worker', 'Values': ['brief']}])\n\
         print(r['Reservations'][0]['Instances'][0]['State']['Name'])",
    );
    assert!(
        ["terminated", "shutting-down"].contains(&brief_id.trim()),
        "{brief_id}"
    );
    // A worker launched without this server (its tags only), past its deadline: reaped.
    let orphan = moto.boto3(&format!(
        "r = ec2.run_instances(ImageId='{ami}', MinCount=1, MaxCount=1, TagSpecifications=[{{'ResourceType': 'instance', 'Tags': [\
         {{'Key': 'telejob:worker', 'Value': 'from-cli'}}, {{'Key': 'telejob:owner', 'Value': 'carol'}}, \
         {{'Key': 'telejob:launcher', 'Value': 'telejob'}}, {{'Key': 'telejob:deadline', 'Value': '2020-01-01T00:00:00Z'}}]}}])\n\
         print(r['Instances'][0]['InstanceId'])"
    ));
    let orphan = orphan.trim().to_string();
    let started = Instant::now();
    while state_of(&moto, &orphan) == "running" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the past-deadline worker was not reaped"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The CLI, through the server and straight on EC2 (state in the tags).
    let keyfile = dir.join("id.pub");
    std::fs::write(&keyfile, format!("{ALICE_KEY}\n")).expect("key");
    let cli = |args: &[&str]| {
        let mut c = Command::new(telejob_bin!());
        c.args(args)
            .env("TELEJOB_SERVER", &base2)
            .env("TELEJOB_TOKEN", &alice);
        for (k, v) in moto.env() {
            c.env(k, v);
        }
        c.output().expect("telejob")
    };
    let o = cli(&["worker", "list"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("dev "), "{o:?}");
    let cfg_arg = cfg.to_str().expect("utf8");
    let key_arg = keyfile.to_str().expect("utf8");
    let direct = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--compute", "ec2", "--config", cfg_arg]);
        cli(&all)
    };
    let o = direct(&[
        "worker",
        "launch",
        "--ssh-key",
        key_arg,
        "--name",
        "from-cli-2",
        "--lifetime",
        "2h",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("from-cli-2") && out.contains("ssh analyst@"),
        "{out}"
    );
    let o = direct(&["worker", "extend", "from-cli-2", "--by", "1h"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = direct(&["worker", "extend", "from-cli-2", "--by", "30h"]);
    assert_eq!(o.status.code(), Some(2), "past the maximum: {o:?}");
    let o = direct(&["worker", "terminate", "from-cli-2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = direct(&["worker", "show", "from-cli-2"]);
    assert_eq!(o.status.code(), Some(2), "gone: {o:?}");
    // Terminate ends it at once, and says so.
    let s = reqwest::Client::new()
        .delete(format!("{base2}/api/workers/dev"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("terminate")
        .status()
        .as_u16();
    assert_eq!(s, 200);
    assert!(["terminated", "shutting-down"].contains(&state_of(&moto, &id).as_str()));
    let ended: serde_json::Value =
        serde_json::from_str(&events.recv_timeout(Duration::from_secs(15)).expect("ended"))
            .expect("json");
    assert_eq!(
        (ended["event"].as_str(), ended["worker"].as_str()),
        (Some("worker_ended"), Some("dev"))
    );
    server.kill_now();
}
