//! Ec2Compute against a local AWS endpoint (moto): launch, tags, idempotency, deadlines,
//! cancellation, reattachment and the reaper. moto runs no user data, so these tests play the
//! agent's part by writing the run's status object; the binary's `aws` test runs the user data.

use std::time::Duration;

use telejob_aws::testing::Moto;
use telejob_aws::{Ec2Compute, Ec2ComputeBuilder, Ec2Settings, S3StoreBuilder};
use telejob_core::compute::ReapReason;
use telejob_core::compute::{Compute, LaunchOptions};
use telejob_core::run::{Run, RunRequest, RunState, keys};
use telejob_core::store::StoreExt;
use telejob_core::testing::request;

struct Env {
    moto: Moto,
    ami: String,
}

fn env() -> Option<Env> {
    let moto = Moto::start()?;
    moto.create_buckets(&["pub", "priv"]);
    moto.run_role();
    let ami = moto
        .boto3("print(ec2.describe_images()['Images'][0]['ImageId'])")
        .trim()
        .to_string();
    Some(Env { moto, ami })
}

/// The S3 store at `url` on the test endpoint.
async fn store(e: &Env, url: &str) -> telejob_aws::S3Store {
    S3StoreBuilder::from_url(url)
        .expect("url")
        .with_aws(e.moto.aws())
        .build()
        .await
        .expect("store")
}

async fn compute(e: &Env, launcher: &str, margin: u64) -> Ec2Compute {
    let public = store(e, "s3://pub/").await;
    let private = store(e, "s3://priv/telejob/").await;
    let mut s = Ec2Settings::new(&e.ami);
    s.instance_type = "t3.micro".into();
    s.allowed_instance_types = vec!["t3.micro".into(), "t3.large".into()];
    s.run_role = Some(e.moto.run_role());
    s.margin_seconds = margin;
    s.poll_seconds = 1;
    s.launcher = launcher.into();
    // Any file will do as the agent binary: moto never boots it.
    s.agent_binary = Some(std::env::current_exe().expect("exe"));
    Ec2ComputeBuilder::new(s, public, private)
        .with_aws(e.moto.aws())
        .build()
        .await
        .expect("compute")
}

/// A compute of the `telejob` launcher with `margin` seconds past each deadline, and run
/// `job` (of `timeout` seconds) launched on it.
async fn launched(e: &Env, margin: u64, job: &str, timeout: u64) -> (Ec2Compute, RunRequest) {
    launched_by(e, "telejob", margin, job, timeout).await
}

/// [`launched`], by the launcher `launcher`.
async fn launched_by(
    e: &Env,
    launcher: &str,
    margin: u64,
    job: &str,
    timeout: u64,
) -> (Ec2Compute, RunRequest) {
    let c = compute(e, launcher, margin).await;
    let r = req(job, Duration::from_secs(timeout));
    c.launch(r.clone(), LaunchOptions::default())
        .await
        .expect("launch");
    (c, r)
}

fn req(job: &str, timeout: Duration) -> RunRequest {
    let mut r = request(job, "store:code/x.tar.gz", "./run.sh", timeout);
    r.owner = Some("alice".into());
    r
}

/// `instance-id state` of every instance carrying the run's tag.
fn instances_of(e: &Env, run: &str) -> Vec<(String, String)> {
    let out = e.moto.boto3(&format!(
        "r = ec2.describe_instances(Filters=[{{'Name': 'tag:telejob:run', 'Values': ['{run}']}}])\n\
         for res in r['Reservations']:\n  for i in res['Instances']:\n    print(i['InstanceId'], i['State']['Name'])"
    ));
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The run's final record, within a minute.
async fn ended(c: &Ec2Compute, r: &RunRequest) -> Run {
    tokio::time::timeout(Duration::from_secs(60), c.wait(&r.run_id))
        .await
        .expect("the run ends within a minute")
        .expect("wait")
}

/// The private store the computes use.
async fn private_store(e: &Env) -> telejob_aws::S3Store {
    store(e, "s3://priv/telejob/").await
}

async fn write_status(c: &Env, r: &RunRequest, state: RunState) {
    let private = private_store(c).await;
    let mut run = Run::pending(r);
    run.state = state;
    run.exit_code = Some(0);
    private
        .put_json(&keys::status(&r.job, &r.run_id), &run)
        .await
        .expect("status");
}

#[tokio::test]
async fn launch_tags_the_instance_and_never_starts_a_second_one() {
    let Some(e) = env() else { return };
    let (c, r) = launched(&e, 900, "tagged", 600).await;
    let id = c.instance_of(&r.run_id).expect("instance");
    let desc = e.moto.boto3(&format!(
        "i = ec2.describe_instances(InstanceIds=['{id}'])['Reservations'][0]['Instances'][0]\n\
         print(json.dumps({{'tags': {{t['Key']: t['Value'] for t in i['Tags']}}, 'type': i['InstanceType'], \
         'profile': i.get('IamInstanceProfile', {{}}).get('Arn', ''), \
         'shutdown': ec2.describe_instance_attribute(InstanceId='{id}', Attribute='instanceInitiatedShutdownBehavior')['InstanceInitiatedShutdownBehavior']['Value']}}))"
    ));
    let v: serde_json::Value = serde_json::from_str(desc.trim()).expect("json");
    let tags = &v["tags"];
    assert_eq!(tags["telejob:job"], "tagged");
    assert_eq!(tags["telejob:run"], r.run_id.as_str());
    assert_eq!(tags["telejob:owner"], "alice");
    assert_eq!(tags["telejob:launcher"], "telejob");
    assert!(
        tags["Name"].as_str().is_some_and(|n| n.contains("tagged")),
        "{v}"
    );
    assert!(
        tags["telejob:deadline"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z')),
        "{v}"
    );
    assert_eq!(v["type"], "t3.micro");
    // The job is root of the instance: it holds no instance profile.
    assert_eq!(v["profile"], "", "{v}");
    assert_eq!(v["shutdown"], "terminate");

    // The same run again, in this process: nothing new.
    c.launch(r.clone(), LaunchOptions::default())
        .await
        .expect("relaunch");
    // And from a fresh process that does not know the run (a retried launch after a crash):
    // moto ignores ClientToken, so only the tag lookup prevents a second instance.
    let fresh = compute(&e, "telejob", 900).await;
    fresh
        .launch(r.clone(), LaunchOptions::default())
        .await
        .expect("relaunch");
    assert_eq!(fresh.instance_of(&r.run_id).as_deref(), Some(id.as_str()));
    assert_eq!(instances_of(&e, r.run_id.as_str()).len(), 1);
    c.forget_all();
    fresh.forget_all();
}

#[tokio::test]
async fn this_endpoint_ignores_client_tokens() {
    // Why the launcher looks for a tagged instance first: the same token twice, two instances.
    let Some(e) = env() else { return };
    let n = e.moto.boto3(&format!(
        "for _ in range(2): ec2.run_instances(ImageId='{}', MinCount=1, MaxCount=1, ClientToken='same')\n\
         print(sum(len(r['Instances']) for r in ec2.describe_instances()['Reservations']))",
        e.ami
    ));
    assert_eq!(n.trim(), "2");
}

#[tokio::test]
async fn a_run_past_its_deadline_is_terminated_and_timed_out() {
    let Some(e) = env() else { return };
    let (c, r) = launched(&e, 1, "slow", 1).await;
    let run = ended(&c, &r).await;
    assert_eq!(run.state, RunState::TimedOut);
    assert!(
        run.error
            .as_deref()
            .is_some_and(|m| m.contains("terminated")),
        "{run:?}"
    );
    let states = instances_of(&e, r.run_id.as_str());
    assert!(
        states
            .iter()
            .all(|(_, s)| s == "terminated" || s == "shutting-down"),
        "{states:?}"
    );
}

#[tokio::test]
async fn the_agents_status_ends_the_run_and_the_instance() {
    let Some(e) = env() else { return };
    let (c, r) = launched(&e, 900, "quick", 600).await;
    // The request and the code pointer are in the private store for the agent.
    let private = private_store(&e).await;
    let staged: RunRequest = private
        .get_json(&format!(
            "{}request.json",
            keys::run_prefix(&r.job, &r.run_id)
        ))
        .await
        .expect("request stored");
    assert_eq!(staged.command, r.command);
    write_status(&e, &r, RunState::Succeeded).await;
    let run = ended(&c, &r).await;
    assert_eq!(run.state, RunState::Succeeded);
    // The request (it carries the job's secrets) is gone with the run.
    let gone = private
        .get_json::<RunRequest>(&format!(
            "{}request.json",
            keys::run_prefix(&r.job, &r.run_id)
        ))
        .await;
    assert!(
        matches!(gone, Err(telejob_core::Error::NotFound(_))),
        "{gone:?}"
    );
    let id = c.instance_of(&r.run_id).expect("instance");
    assert!(
        instances_of(&e, r.run_id.as_str())
            .iter()
            .any(|(i, s)| *i == id && s != "running")
    );
    // Its provenance names the machine: instance, AMI, type.
    let machine = run
        .provenance
        .as_ref()
        .and_then(|p| p.compute.clone())
        .expect("the machine");
    assert!(
        machine.starts_with(&format!("ec2 instance {id} (ami-")) && machine.ends_with(")"),
        "{machine}"
    );
}

#[tokio::test]
async fn an_instance_that_ends_without_a_result_interrupts_the_run() {
    let Some(e) = env() else { return };
    let (c, r) = launched(&e, 900, "lost", 600).await;
    let id = c.instance_of(&r.run_id).expect("instance");
    e.moto
        .boto3(&format!("ec2.terminate_instances(InstanceIds=['{id}'])"));
    let run = ended(&c, &r).await;
    assert_eq!(run.state, RunState::Interrupted);
    assert!(
        run.error.as_deref().is_some_and(|m| m.contains(&id)),
        "{run:?}"
    );
}

#[tokio::test]
async fn cancel_terminates_the_instance() {
    let Some(e) = env() else { return };
    let (c, r) = launched(&e, 900, "cancelled", 600).await;
    c.cancel(&r.run_id).await.expect("cancel");
    let run = c.wait(&r.run_id).await.expect("wait");
    assert_eq!(run.state, RunState::Cancelled);
    let states = instances_of(&e, r.run_id.as_str());
    assert!(
        states.iter().all(|(_, s)| s != "running" && s != "pending"),
        "{states:?}"
    );
}

#[tokio::test]
async fn after_a_restart_runs_are_reattached_and_the_rest_reaped() {
    let Some(e) = env() else { return };
    let before = compute(&e, "telejob", 900).await;
    let kept = req("kept", Duration::from_secs(600));
    let orphan = req("orphan", Duration::from_secs(600));
    let done = req("done", Duration::from_secs(600));
    for r in [&kept, &orphan, &done] {
        before
            .launch(r.clone(), LaunchOptions::default())
            .await
            .expect("launch");
    }
    // Another launcher's instance, within its deadline: not ours to reap.
    let (other, foreign) = launched_by(&e, "someone-else", 900, "foreign", 600).await;
    // Another launcher's instance past its deadline: anyone reaps it.
    let (stale_launcher, stale) = launched_by(&e, "someone-else", 0, "stale", 1).await;
    // "kill -9": nobody follows these runs any more.
    for c in [&before, &other, &stale_launcher] {
        c.forget_all();
    }
    write_status(&e, &done, RunState::Succeeded).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // `stale` passes its deadline

    let after = compute(&e, "telejob", 900).await;
    assert!(
        after
            .reattach(&Run::pending(&kept))
            .await
            .expect("reattach")
    );
    let reaped = after.reap().await.expect("reap");
    let reason = |r: &RunRequest| {
        reaped
            .iter()
            .find(|x| x.run_id == r.run_id.as_str())
            .map(|x| x.reason)
    };
    assert_eq!(reason(&kept), None, "{reaped:?}");
    assert_eq!(reason(&orphan), Some(ReapReason::Unknown), "{reaped:?}");
    assert_eq!(reason(&done), Some(ReapReason::Finished), "{reaped:?}");
    assert_eq!(reason(&foreign), None, "{reaped:?}");
    assert_eq!(reason(&stale), Some(ReapReason::PastDeadline), "{reaped:?}");
    assert!(
        instances_of(&e, kept.run_id.as_str())
            .iter()
            .all(|(_, s)| s == "running")
    );
    assert!(
        instances_of(&e, orphan.run_id.as_str())
            .iter()
            .all(|(_, s)| s != "running")
    );

    // The reattached run is followed to its end.
    write_status(&e, &kept, RunState::Failed).await;
    let run = ended(&after, &kept).await;
    assert_eq!(run.state, RunState::Failed);
    // A run with neither instance nor status cannot be reattached.
    assert!(
        !after
            .reattach(&Run::pending(&req("ghost", Duration::from_secs(5))))
            .await
            .expect("reattach")
    );
}

#[tokio::test]
async fn instance_types_outside_the_allowlist_are_refused() {
    let Some(e) = env() else { return };
    let (public, private) = (store(&e, "s3://pub/").await, store(&e, "s3://priv/").await);
    let mut s = Ec2Settings::new(&e.ami);
    s.allowed_instance_types = vec!["t3.small".into()];
    let err = Ec2ComputeBuilder::new(s, public, private)
        .with_aws(e.moto.aws())
        .with_instance_type("p5.48xlarge")
        .build()
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("instance_type") && err.contains("t3.small"),
        "{err}"
    );
}
