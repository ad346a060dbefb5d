//! ion-aws: EC2 compute, S3 blob storage and EBS snapshots on the AWS SDK for Rust.
//!
//! - [`AwsConfig`]: region, endpoint, credentials chain, retries and timeouts, shared by all.
//! - [`S3BlobStore`]: `ion_core::BlobStore` on S3 (multipart above a threshold, streamed gets).
//! - [`Ec2Compute`]: `ion_core::Compute` on EC2 (tagged, idempotent launches into a zone).
//! - [`EbsSnapshots`]: snapshots of tagged EBS volumes with retention.
//!
//! Every SDK error is mapped to `ion_core::Error` in one function (`error::map_sdk_error`);
//! no SDK type appears in a public signature.

mod bootstrap;
mod config;
mod ebs;
mod ec2;
mod error;
mod s3;

pub use bootstrap::{render_bootstrap, shell_quote};
pub use config::{AwsConfig, AwsConfigBuilder, StaticCredentials};
pub use ebs::{
    expired_snapshots, EbsSnapshot, EbsSnapshotState, EbsSnapshots, RetentionPolicy, SnapshotScope,
    TAG_PLATFORM, TAG_TAKEN_AT, TAG_VOLUME,
};
pub use ec2::{
    Ec2Compute, Ec2ComputeConfig, MANAGED_BY, TAG_APP, TAG_IDEMPOTENCY_KEY, TAG_MANAGED_BY,
    TAG_PORT, TAG_TENANT, TAG_VERSION,
};
pub use s3::{S3BlobStore, S3BlobStoreConfig, S3BlobStoreConfigBuilder, ServerSideEncryption};
