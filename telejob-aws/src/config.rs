//! Settings shared by the S3 and EC2 clients: region, endpoint, credentials.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use serde::Deserialize;

/// Where and as whom to reach AWS. Credentials always come from the standard chain
/// (environment, `AWS_PROFILE` and `~/.aws`, SSO, web identity, ECS, the EC2 instance profile);
/// they are never part of telejob's own configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AwsOptions {
    /// The region (default: the standard chain, else `us-east-1`).
    pub region: Option<String>,
    /// A custom endpoint URL, for S3-compatible stores and local test endpoints.
    pub endpoint: Option<String>,
    /// Credentials to use instead of the standard chain (programs embedding telejob, tests).
    #[serde(skip)]
    pub credentials: Option<SharedCredentialsProvider>,
}

impl AwsOptions {
    /// Options for `region`, AWS's own endpoints.
    pub fn region(region: impl Into<String>) -> Self {
        Self {
            region: Some(region.into()),
            ..Self::default()
        }
    }

    /// Sets a custom endpoint.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Uses `provider` instead of the standard credential chain.
    pub fn with_credentials(mut self, provider: SharedCredentialsProvider) -> Self {
        self.credentials = Some(provider);
        self
    }

    /// Fills unset fields from the environment: `AWS_REGION`/`AWS_DEFAULT_REGION` and
    /// `AWS_ENDPOINT_URL_<SERVICE>`/`AWS_ENDPOINT_URL` (the SDKs' own variables).
    pub fn or_env(mut self, service: &str) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if self.region.is_none() {
            self.region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
        }
        if self.endpoint.is_none() {
            self.endpoint =
                var(&format!("AWS_ENDPOINT_URL_{service}")).or_else(|| var("AWS_ENDPOINT_URL"));
        }
        self
    }

    /// Loads the SDK configuration: these settings over the standard chain.
    pub async fn load(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = &self.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &self.endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        if let Some(c) = &self.credentials {
            loader = loader.credentials_provider(c.clone());
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            // No region anywhere: the SDKs refuse to sign without one.
            return sdk.into_builder().region(Region::new("us-east-1")).build();
        }
        sdk
    }
}
