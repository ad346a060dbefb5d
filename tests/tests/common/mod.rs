//! Support shared by the AWS smoke tests: one SDK configuration for moto or a real account.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::Credentials;

/// The shared SDK configuration for `endpoint`: us-east-1 and static test credentials unless the
/// environment names others, short timeouts so a dead peer fails the test instead of hanging it.
pub(crate) async fn aws_config(endpoint: &str) -> SdkConfig {
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "testing".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testing".into());
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(key, secret, None, None, "ion-smoke"))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await
}
