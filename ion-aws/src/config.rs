//! `AwsConfig`: how ion reaches AWS (or an AWS-compatible endpoint such as moto or MinIO).

use std::fmt;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use ion_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// Looks up one configuration variable; `from_env` passes the process environment, tests a map.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads `key` through `lookup`, treating an empty value as unset.
pub(crate) fn lookup_var(lookup: Lookup<'_>, key: &str) -> Option<String> {
    lookup(key).filter(|v| !v.trim().is_empty())
}

/// Parses the variable `key`, failing with `InvalidConfig` naming the key.
pub(crate) fn parse_var<T: std::str::FromStr>(lookup: Lookup<'_>, key: &str) -> Result<Option<T>>
where
    T::Err: fmt::Display,
{
    match lookup_var(lookup, key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| Error::invalid_config(format!("{key}: cannot parse {v:?}: {e}"))),
    }
}

/// Parses a boolean variable (`1`/`true`/`yes` or `0`/`false`/`no`).
pub(crate) fn parse_bool(lookup: Lookup<'_>, key: &str) -> Result<Option<bool>> {
    match lookup_var(lookup, key).as_deref().map(str::trim) {
        None => Ok(None),
        Some("1" | "true" | "yes") => Ok(Some(true)),
        Some("0" | "false" | "no") => Ok(Some(false)),
        Some(other) => Err(Error::invalid_config(format!(
            "{key}: expected true or false, got {other:?}"
        ))),
    }
}

/// Static credentials given explicitly (tests, emulators). `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticCredentials {
    /// The access key id (not secret; printed by `Debug`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token for temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &format_args!("<redacted>"))
            .field(
                "session_token",
                &self
                    .session_token
                    .as_ref()
                    .map(|_| format_args!("<redacted>")),
            )
            .finish()
    }
}

/// How to reach AWS: region, endpoint, credentials, retries and timeouts.
///
/// Credentials come from the standard AWS chain (environment, shared profile files, web
/// identity, ECS and IMDS) unless [`StaticCredentials`] are given. `Debug` hides secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AwsConfig {
    /// Region, e.g. `us-east-1`; `None` uses the standard chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// An explicit endpoint URL for every service (moto, MinIO, a VPC endpoint); `None` = AWS.
    pub endpoint_url: Option<String>,
    /// Address S3 buckets by path (`http://host/bucket/key`) rather than by virtual host; needed
    /// by most emulators and S3-compatible services.
    pub force_path_style: bool,
    /// A named profile from the shared config files; `None` uses `AWS_PROFILE` or `default`.
    pub profile: Option<String>,
    /// Explicit credentials instead of the standard chain.
    pub credentials: Option<StaticCredentials>,
    /// Attempts per call, first included, under the SDK's standard retry mode (jittered
    /// exponential back-off with a retry quota). 1 disables retries.
    pub max_attempts: u32,
    /// Longest wait for a TCP/TLS connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Longest wait for data on an open connection, in milliseconds.
    pub read_timeout_ms: u64,
    /// Longest time for one attempt of a call (not counting a streamed body), in milliseconds;
    /// `None` leaves it unbounded.
    pub attempt_timeout_ms: Option<u64>,
    /// Longest time for a call including retries (not counting a streamed body), in
    /// milliseconds; `None` leaves it unbounded.
    pub operation_timeout_ms: Option<u64>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            force_path_style: false,
            profile: None,
            credentials: None,
            max_attempts: 3,
            connect_timeout_ms: 5_000,
            read_timeout_ms: 30_000,
            attempt_timeout_ms: None,
            operation_timeout_ms: None,
        }
    }
}

impl AwsConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> AwsConfigBuilder {
        AwsConfigBuilder::default()
    }

    /// Reads `ION_AWS_ENDPOINT_URL`, `ION_AWS_REGION` (else `AWS_REGION`), `ION_AWS_PROFILE`,
    /// `ION_AWS_FORCE_PATH_STYLE`, `ION_AWS_MAX_ATTEMPTS`, `ION_AWS_CONNECT_TIMEOUT_MS`,
    /// `ION_AWS_READ_TIMEOUT_MS`, `ION_AWS_ATTEMPT_TIMEOUT_MS` and `ION_AWS_OPERATION_TIMEOUT_MS`.
    /// Credentials stay with the standard AWS chain, which reads its own variables when used.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    pub(crate) fn from_lookup(lookup: Lookup<'_>) -> Result<Self> {
        let mut b = Self::builder();
        if let Some(v) = lookup_var(lookup, "ION_AWS_ENDPOINT_URL") {
            b = b.endpoint_url(v);
        }
        if let Some(v) =
            lookup_var(lookup, "ION_AWS_REGION").or_else(|| lookup_var(lookup, "AWS_REGION"))
        {
            b = b.region(v);
        }
        if let Some(v) = lookup_var(lookup, "ION_AWS_PROFILE") {
            b = b.profile(v);
        }
        if let Some(v) = parse_bool(lookup, "ION_AWS_FORCE_PATH_STYLE")? {
            b = b.force_path_style(v);
        }
        if let Some(v) = parse_var(lookup, "ION_AWS_MAX_ATTEMPTS")? {
            b = b.max_attempts(v);
        }
        if let Some(v) = parse_var(lookup, "ION_AWS_CONNECT_TIMEOUT_MS")? {
            b = b.connect_timeout(Duration::from_millis(v));
        }
        if let Some(v) = parse_var(lookup, "ION_AWS_READ_TIMEOUT_MS")? {
            b = b.read_timeout(Duration::from_millis(v));
        }
        if let Some(v) = parse_var(lookup, "ION_AWS_ATTEMPT_TIMEOUT_MS")? {
            b = b.attempt_timeout(Duration::from_millis(v));
        }
        if let Some(v) = parse_var(lookup, "ION_AWS_OPERATION_TIMEOUT_MS")? {
            b = b.operation_timeout(Duration::from_millis(v));
        }
        b.build()
    }

    /// Checks every field, naming the offending key.
    pub fn validate(&self) -> Result<()> {
        if let Some(url) = &self.endpoint_url {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.chars().any(char::is_whitespace)) {
                return Err(Error::invalid_config(format!(
                    "endpoint_url (ION_AWS_ENDPOINT_URL): expected an http:// or https:// url, got {url:?}"
                )));
            }
        }
        if let Some(region) = &self.region {
            let ok = !region.is_empty()
                && region.len() <= 32
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(Error::invalid_config(format!(
                    "region (ION_AWS_REGION): expected a region name like us-east-1, got {region:?}"
                )));
            }
        }
        if !(1..=20).contains(&self.max_attempts) {
            return Err(Error::invalid_config(format!(
                "max_attempts (ION_AWS_MAX_ATTEMPTS): must be 1..=20, got {}",
                self.max_attempts
            )));
        }
        for (key, v) in [
            ("connect_timeout_ms", Some(self.connect_timeout_ms)),
            ("read_timeout_ms", Some(self.read_timeout_ms)),
            ("attempt_timeout_ms", self.attempt_timeout_ms),
            ("operation_timeout_ms", self.operation_timeout_ms),
        ] {
            if v == Some(0) {
                return Err(Error::invalid_config(format!("{key}: must not be zero")));
            }
        }
        if let Some(c) = &self.credentials {
            if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
                return Err(Error::invalid_config(
                    "credentials: access_key_id and secret_access_key must not be empty",
                ));
            }
        }
        Ok(())
    }

    /// The SDK's retry configuration for this config.
    pub(crate) fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard().with_max_attempts(self.max_attempts)
    }

    /// The SDK's timeout configuration for this config.
    pub(crate) fn timeout_config(&self) -> TimeoutConfig {
        let mut t = TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(self.connect_timeout_ms))
            .read_timeout(Duration::from_millis(self.read_timeout_ms));
        if let Some(ms) = self.attempt_timeout_ms {
            t = t.operation_attempt_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.operation_timeout_ms {
            t = t.operation_timeout(Duration::from_millis(ms));
        }
        t.build()
    }

    /// Loads the shared SDK configuration: the standard chain, overridden by the explicit fields.
    pub(crate) async fn load_sdk_config(&self) -> Result<SdkConfig> {
        self.validate()?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(self.retry_config())
            .timeout_config(self.timeout_config());
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile.clone());
        }
        if let Some(c) = &self.credentials {
            loader = loader.credentials_provider(aws_credential_types(c));
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(Error::invalid_config(
                "region (ION_AWS_REGION or AWS_REGION): no region configured and none found in the aws profile",
            ));
        }
        Ok(config)
    }
}

fn aws_credential_types(c: &StaticCredentials) -> aws_sdk_s3::config::Credentials {
    aws_sdk_s3::config::Credentials::new(
        c.access_key_id.clone(),
        c.secret_access_key.clone(),
        c.session_token.clone(),
        None,
        "ion-static",
    )
}

/// Builds an [`AwsConfig`]; [`AwsConfigBuilder::build`] validates it.
#[derive(Clone, Debug, Default)]
pub struct AwsConfigBuilder {
    config: AwsConfig,
}

impl AwsConfigBuilder {
    /// Sets the region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.config.region = Some(region.into());
        self
    }
    /// Sets an explicit endpoint URL for every service.
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.config.endpoint_url = Some(url.into());
        self
    }
    /// Turns S3 path-style addressing on or off.
    pub fn force_path_style(mut self, on: bool) -> Self {
        self.config.force_path_style = on;
        self
    }
    /// Uses a named profile from the shared config files.
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.config.profile = Some(profile.into());
        self
    }
    /// Uses static credentials instead of the standard chain.
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.config.credentials = Some(StaticCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        });
        self
    }
    /// Sets attempts per call (1 disables retries).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts;
        self
    }
    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout_ms = d.as_millis() as u64;
        self
    }
    /// Sets the read timeout.
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.config.read_timeout_ms = d.as_millis() as u64;
        self
    }
    /// Bounds one attempt of a call.
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.config.attempt_timeout_ms = Some(d.as_millis() as u64);
        self
    }
    /// Bounds a call including its retries.
    pub fn operation_timeout(mut self, d: Duration) -> Self {
        self.config.operation_timeout_ms = Some(d.as_millis() as u64);
        self
    }
    /// Validates and returns the config.
    pub fn build(self) -> Result<AwsConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ion_core::ErrorKind;

    use super::*;

    fn from_map(pairs: &[(&str, &str)]) -> Result<AwsConfig> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AwsConfig::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn from_env_reads_every_documented_key() {
        let c = from_map(&[
            ("ION_AWS_ENDPOINT_URL", "http://127.0.0.1:15000"),
            ("AWS_REGION", "eu-west-1"),
            ("ION_AWS_FORCE_PATH_STYLE", "true"),
            ("ION_AWS_MAX_ATTEMPTS", "5"),
            ("ION_AWS_CONNECT_TIMEOUT_MS", "1500"),
            ("ION_AWS_OPERATION_TIMEOUT_MS", "60000"),
        ])
        .unwrap();
        assert_eq!(c.endpoint_url.as_deref(), Some("http://127.0.0.1:15000"));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert!(c.force_path_style);
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.connect_timeout_ms, 1500);
        assert_eq!(c.operation_timeout_ms, Some(60_000));
        assert_eq!(c.retry_config().max_attempts(), 5);
    }

    #[test]
    fn ion_region_wins_over_aws_region() {
        let c = from_map(&[("AWS_REGION", "eu-west-1"), ("ION_AWS_REGION", "us-west-2")]).unwrap();
        assert_eq!(c.region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (pairs, key) in [
            (
                vec![("ION_AWS_MAX_ATTEMPTS", "many")],
                "ION_AWS_MAX_ATTEMPTS",
            ),
            (vec![("ION_AWS_MAX_ATTEMPTS", "0")], "ION_AWS_MAX_ATTEMPTS"),
            (
                vec![("ION_AWS_FORCE_PATH_STYLE", "maybe")],
                "ION_AWS_FORCE_PATH_STYLE",
            ),
            (
                vec![("ION_AWS_ENDPOINT_URL", "ftp://x")],
                "ION_AWS_ENDPOINT_URL",
            ),
            (vec![("AWS_REGION", "US East")], "ION_AWS_REGION"),
            (
                vec![("ION_AWS_CONNECT_TIMEOUT_MS", "0")],
                "connect_timeout_ms",
            ),
        ] {
            let e = from_map(&pairs).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{pairs:?}");
            assert!(e.message().contains(key), "{e} should name {key}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let c = AwsConfig::builder()
            .static_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI-very-secret")
            .build()
            .unwrap();
        let mut with_token = c.clone();
        with_token.credentials.as_mut().unwrap().session_token = Some("token-secret-xyz".into());
        let shown = format!("{with_token:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(!shown.contains("token-secret"), "{shown}");
    }

    #[test]
    fn serde_round_trips_with_defaults() {
        let c: AwsConfig = serde_json::from_str(r#"{"region":"us-east-1"}"#).unwrap();
        assert_eq!(c.max_attempts, 3);
        let back: AwsConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[tokio::test]
    async fn load_applies_explicit_fields() {
        let c = AwsConfig::builder()
            .region("us-east-1")
            .endpoint_url("http://127.0.0.1:1")
            .static_credentials("a", "b")
            .max_attempts(4)
            .build()
            .unwrap();
        let sdk = c.load_sdk_config().await.unwrap();
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("us-east-1"));
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:1"));
        assert_eq!(sdk.retry_config().map(|r| r.max_attempts()), Some(4));
    }
}
