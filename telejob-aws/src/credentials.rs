//! The standard AWS credential chain (environment, shared profile files, SSO, web identity, ECS,
//! the EC2 instance profile) for object_store's S3 client, through `aws-config`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use chrono::{DateTime, Utc};
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// Renew credentials this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// An object_store credential provider backed by an `aws-config` provider, caching credentials
/// until shortly before they expire.
#[derive(Debug)]
pub(crate) struct ChainCredentials {
    inner: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl ChainCredentials {
    pub(crate) fn new(inner: SharedCredentialsProvider) -> Self {
        Self {
            inner,
            cached: Mutex::new(None),
        }
    }
}

#[async_trait]
impl CredentialProvider for ChainCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((c, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|e| {
                e.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > RENEW_BEFORE)
            });
            if fresh {
                return Ok(c.clone());
            }
        }
        let creds =
            self.inner
                .provide_credentials()
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "S3",
                    source: format!(
                        "no AWS credentials: {e} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or \
                     AWS_PROFILE, or run with an instance profile)"
                    )
                    .into(),
                })?;
        let c = Arc::new(AwsCredential {
            key_id: creds.access_key_id().to_string(),
            secret_key: creds.secret_access_key().to_string(),
            token: creds.session_token().map(str::to_string),
        });
        *cached = Some((c.clone(), creds.expiry()));
        Ok(c)
    }
}

/// Temporary credentials for one run, as the agent receives them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCredentials {
    /// The access key id (`ASIA…` for session credentials).
    pub access_key_id: String,
    /// The secret key.
    pub secret_access_key: String,
    /// The session token.
    pub session_token: String,
    /// When they stop working.
    pub expires: DateTime<Utc>,
}

impl std::fmt::Debug for RunCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl RunCredentials {
    /// A credentials provider for the SDK and the S3 store that always answers these.
    pub fn provider(&self) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            Some(self.session_token.clone()),
            Some(self.expires.into()),
            "telejob-run",
        ))
    }
}
