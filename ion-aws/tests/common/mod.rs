//! What the moto-backed tests share: configs pointing at the peer and raw SDK clients for
//! checks the ion API deliberately does not offer (listing multipart uploads, reading tags).
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use ion_aws::{AwsConfig, S3BlobStore, S3BlobStoreConfig};
use ion_core::testkit::{peer_unreachable, peer_var};

pub const S3_VAR: &str = "ION_TEST_S3_ENDPOINT";
pub const EC2_VAR: &str = "ION_TEST_EC2_ENDPOINT";
/// One bucket shared by every run (`ION_TEST_S3_BUCKET`, default `ion-aws-tests`); cases use
/// unique prefixes inside it.
pub fn bucket() -> String {
    env_or("ION_TEST_S3_BUCKET", "ion-aws-tests")
}
pub const MIB: u64 = 1024 * 1024;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Connection settings for the peer at `endpoint`: path-style, short connect timeout, test
/// credentials unless the environment names others.
pub fn aws_config(endpoint: &str) -> AwsConfig {
    AwsConfig::builder()
        .endpoint_url(endpoint)
        .region(env_or("AWS_REGION", "us-east-1"))
        .force_path_style(true)
        .static_credentials(
            env_or("AWS_ACCESS_KEY_ID", "testing"),
            env_or("AWS_SECRET_ACCESS_KEY", "testing"),
        )
        .connect_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(120))
        .build()
        .expect("test aws config is valid")
}

/// Small parts so multipart paths run with modest bodies (S3's minimum part is 5 MiB).
pub fn small_parts() -> S3BlobStoreConfig {
    S3BlobStoreConfig::builder(bucket())
        .multipart_threshold(5 * MIB)
        .part_size(5 * MIB)
        .max_concurrent_parts(3)
        .build()
        .expect("valid s3 config")
}

/// A store on the shared test bucket, or `None` (skipped) without a peer.
pub async fn s3_store(what: &str, config: S3BlobStoreConfig) -> Option<S3BlobStore> {
    let endpoint = peer_var(S3_VAR, what)?;
    let store = S3BlobStore::new(&aws_config(&endpoint), config)
        .await
        .expect("s3 store");
    if let Err(e) = store.create_bucket_if_missing().await {
        return peer_unreachable(S3_VAR, what, &e);
    }
    Some(store)
}

/// A raw S3 client on the same peer.
pub async fn raw_s3(endpoint: &str) -> aws_sdk_s3::Client {
    let shared = raw_shared(endpoint).await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A raw EC2 client on the same peer.
pub async fn raw_ec2(endpoint: &str) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&raw_shared(endpoint).await)
}

async fn raw_shared(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(env_or("AWS_REGION", "us-east-1")))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            env_or("AWS_ACCESS_KEY_ID", "testing"),
            env_or("AWS_SECRET_ACCESS_KEY", "testing"),
            None,
            None,
            "ion-aws-tests",
        ))
        .load()
        .await
}

/// Multipart uploads still open under `prefix` in the test bucket.
pub async fn open_uploads(s3: &aws_sdk_s3::Client, prefix: &str) -> Vec<String> {
    let out = s3
        .list_multipart_uploads()
        .bucket(bucket())
        .prefix(prefix)
        .send()
        .await
        .expect("list multipart uploads");
    out.uploads()
        .iter()
        .filter_map(|u| u.key().map(str::to_owned))
        .collect()
}
