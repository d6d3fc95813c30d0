//! The EC2 calls telejob makes, with bounded, jittered retries for throttling and capacity
//! errors, and tolerance for EC2's eventual consistency.

use std::future::Future;
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName};
use telejob_core::{Error, Result};

/// Error codes worth another attempt: throttling, capacity, transient service faults.
const RETRYABLE: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "Unavailable",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
];

/// How often and how long to retry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// "Full jitter" backoff: a random delay up to `min(cap, base * 2^attempt)`.
    fn delay(&self, attempt: u32) -> Duration {
        let max = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        max.mul_f64(fastrand::f64())
    }
}

/// An EC2 failure: its code (if the service gave one) and a one-line message.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: Option<String>,
    pub message: String,
    pub retryable: bool,
}

impl ApiError {
    pub(crate) fn into_error(self, op: &'static str) -> Error {
        Error::Compute {
            op,
            reason: self.message,
            retryable: self.retryable,
            source: None,
        }
    }

    pub(crate) fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

pub(crate) fn classify<E, R>(e: SdkError<E, R>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().map(str::to_string);
    let transport = matches!(
        e,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
    );
    let retryable = transport || code.as_deref().is_some_and(|c| RETRYABLE.contains(&c));
    let message = match (&code, e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        _ => DisplayErrorContext(&e).to_string(),
    };
    ApiError {
        code,
        message: message.replace('\n', " "),
        retryable,
    }
}

/// Calls `f` until it succeeds, fails permanently, or the attempts are used up. `f` gets the
/// attempt number (0 first) and returns an already classified error.
pub(crate) async fn retrying<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut f: F,
) -> std::result::Result<T, ApiError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = std::result::Result<T, ApiError>>,
{
    let mut attempt = 0;
    loop {
        match f(attempt).await {
            Ok(v) => return Ok(v),
            Err(mut err) => {
                attempt += 1;
                if !err.retryable || attempt >= policy.attempts {
                    if err.retryable {
                        err.message = format!("{} (gave up after {attempt} attempts)", err.message);
                    }
                    return Err(err);
                }
                let d = policy.delay(attempt);
                tracing::warn!(%what, attempt, error = %err.message, delay_ms = d.as_millis() as u64, "EC2 call failed; retrying");
                tokio::time::sleep(d).await;
            }
        }
    }
}

/// [`retrying`] for one SDK call.
pub(crate) async fn with_retries<T, E, R, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut f: F,
) -> std::result::Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    retrying(policy, what, |_| {
        let call = f();
        async move { call.await.map_err(classify) }
    })
    .await
}

/// States of an instance that still costs money or may still run.
pub(crate) const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];

/// Instances in a live state carrying `tag:telejob:run = run` (or any run, for `None`).
pub(crate) async fn find_tagged(
    client: &Client,
    policy: RetryPolicy,
    run: Option<&str>,
) -> std::result::Result<Vec<Instance>, ApiError> {
    find_live(client, policy, super::tags::RUN, run).await
}

/// Instances in a live state carrying the tag `key` with the value `value` (or any value, for
/// `None`), over every page of DescribeInstances.
pub(crate) async fn find_live(
    client: &Client,
    policy: RetryPolicy,
    key: &str,
    value: Option<&str>,
) -> std::result::Result<Vec<Instance>, ApiError> {
    let tag_filter = match value {
        Some(v) => Filter::builder()
            .name(format!("tag:{key}"))
            .values(v)
            .build(),
        None => Filter::builder().name("tag-key").values(key).build(),
    };
    let states = Filter::builder()
        .name("instance-state-name")
        .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
        .build();
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = with_retries(policy, "DescribeInstances", || {
            client
                .describe_instances()
                .filters(tag_filter.clone())
                .filters(states.clone())
                .set_next_token(token.clone())
                .send()
        })
        .await?;
        for r in page.reservations() {
            out.extend(r.instances().iter().cloned());
        }
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// The instance's state, `None` when EC2 does not know it (yet, or any more).
pub(crate) async fn state_of(
    client: &Client,
    policy: RetryPolicy,
    id: &str,
) -> std::result::Result<Option<(InstanceStateName, Option<String>)>, ApiError> {
    let r = with_retries(policy, "DescribeInstances", || {
        client.describe_instances().instance_ids(id).send()
    })
    .await;
    match r {
        Ok(out) => Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
            .and_then(|i| {
                let s = i.state()?.name()?.clone();
                let why = i
                    .state_reason()
                    .and_then(|r| r.message())
                    .map(str::to_string);
                Some((s, why))
            })),
        Err(e) if e.is("InvalidInstanceID.NotFound") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether an instance in this state has stopped running the job for good.
pub(crate) fn ended(s: &InstanceStateName) -> bool {
    matches!(
        s,
        InstanceStateName::ShuttingDown
            | InstanceStateName::Terminated
            | InstanceStateName::Stopping
            | InstanceStateName::Stopped
    )
}

/// Terminates `id` and confirms it is shutting down or gone. EC2 is eventually consistent: a
/// just-launched instance may be unknown for a while, and a terminate may not show at once; both
/// are retried for up to `patience`.
pub(crate) async fn terminate_confirmed(
    client: &Client,
    policy: RetryPolicy,
    id: &str,
    patience: Duration,
) -> Result<()> {
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        let r = with_retries(policy, "TerminateInstances", || {
            client.terminate_instances().instance_ids(id).send()
        })
        .await;
        match r {
            Ok(_) => {}
            Err(e) if e.is("InvalidInstanceID.NotFound") => {}
            Err(e) => return Err(e.into_error("terminate")),
        }
        match state_of(client, policy, id).await {
            Ok(Some((InstanceStateName::ShuttingDown | InstanceStateName::Terminated, _))) => {
                return Ok(());
            }
            Ok(_) | Err(_) if started.elapsed() < patience => {}
            Ok(state) => {
                return Err(Error::Compute {
                    op: "terminate",
                    reason: format!(
                        "instance {id} is still {:?} after {}s of terminating it",
                        state.map(|s| s.0),
                        patience.as_secs()
                    ),
                    retryable: true,
                    source: None,
                });
            }
            Err(e) => return Err(e.into_error("terminate")),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// The instance's `telejob:deadline` tag, parsed.
pub(crate) fn deadline(i: &Instance) -> Option<chrono::DateTime<chrono::Utc>> {
    tag(i, super::tags::DEADLINE)
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&chrono::Utc))
}

/// The value of tag `key` on `i`.
pub(crate) fn tag<'a>(i: &'a Instance, key: &str) -> Option<&'a str> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}
