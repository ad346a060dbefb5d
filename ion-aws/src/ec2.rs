//! `Ec2Compute`: `ion_core::Compute` on EC2: tagged, idempotent launches into a zone.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::config::interceptors::InterceptorContext;
use aws_sdk_ec2::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_ec2::types::{
    AvailabilityZoneState, Filter, IamInstanceProfileSpecification, InstanceStateName,
    InstanceType, Placement, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use ion_core::{
    AppId, Compute, ComputeCapabilities, Error, IdempotencyKey, Instance, InstanceFilter,
    InstanceId, InstanceState, LaunchRequest, Result, TenantId, Timestamp, Version, Zone, ZoneInfo,
};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::sync::OnceCell;

use crate::bootstrap::render_bootstrap;
use crate::config::{lookup_var, parse_var, AwsConfig, Lookup};
use crate::error::{map_sdk_error, map_waiter_error, response_lost};

/// Tag naming the owning tenant.
pub const TAG_TENANT: &str = "ion:tenant";
/// Tag naming the app.
pub const TAG_APP: &str = "ion:app";
/// Tag holding the app version (a number).
pub const TAG_VERSION: &str = "ion:version";
/// Tag marking resources ion manages; its value is `ion`.
pub const TAG_MANAGED_BY: &str = "ion:managed-by";
/// Tag holding the launch's idempotency key.
pub const TAG_IDEMPOTENCY_KEY: &str = "ion:idempotency-key";
/// Tag holding the port the app listens on.
pub const TAG_PORT: &str = "ion:port";
/// The value of [`TAG_MANAGED_BY`].
pub const MANAGED_BY: &str = "ion";

/// What [`Ec2Compute`] launches and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ec2ComputeConfig {
    /// The machine image every instance boots (`ami-…`), with the ion node agent installed.
    pub image_id: String,
    /// The instance type, e.g. `t3.micro`.
    pub instance_type: String,
    /// Subnet per zone (`us-east-1a` → `subnet-…`). When set, launches go into the zone's subnet
    /// and only these zones are offered; when empty, launches use the default VPC with
    /// `Placement.AvailabilityZone`.
    pub subnets: BTreeMap<String, String>,
    /// Security groups for new instances (by id).
    pub security_group_ids: Vec<String>,
    /// IAM instance profile name for new instances (lets the agent read artifacts).
    pub instance_profile: Option<String>,
    /// EC2 key pair name for new instances.
    pub key_name: Option<String>,
    /// The command the bootstrap script `exec`s, one word per element; every word is quoted.
    pub bootstrap_command: Vec<String>,
    /// `MaxResults` per `DescribeInstances` page (5..=1000).
    pub describe_page_size: i32,
}

impl Default for Ec2ComputeConfig {
    fn default() -> Self {
        Self {
            image_id: String::new(),
            instance_type: "t3.micro".into(),
            subnets: BTreeMap::new(),
            security_group_ids: Vec::new(),
            instance_profile: None,
            key_name: None,
            bootstrap_command: vec!["/opt/ion/bin/ion-agent".into(), "run".into()],
            describe_page_size: 1000,
        }
    }
}

fn resource_id_ok(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && !s.chars().any(|c| c.is_control())
}

impl Ec2ComputeConfig {
    /// Defaults with `image_id`.
    pub fn new(image_id: impl Into<String>) -> Self {
        Self {
            image_id: image_id.into(),
            ..Self::default()
        }
    }

    /// Reads `ION_EC2_IMAGE_ID` (required), `ION_EC2_INSTANCE_TYPE`, `ION_EC2_SUBNETS`
    /// (`zone=subnet-id,…`), `ION_EC2_SECURITY_GROUP_IDS` (comma-separated),
    /// `ION_EC2_INSTANCE_PROFILE`, `ION_EC2_KEY_NAME` and `ION_EC2_DESCRIBE_PAGE_SIZE`.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    pub(crate) fn from_lookup(lookup: Lookup<'_>) -> Result<Self> {
        let image = lookup_var(lookup, "ION_EC2_IMAGE_ID")
            .ok_or_else(|| Error::invalid_config("image_id (ION_EC2_IMAGE_ID): not set"))?;
        let mut c = Self::new(image);
        if let Some(t) = lookup_var(lookup, "ION_EC2_INSTANCE_TYPE") {
            c.instance_type = t;
        }
        if let Some(list) = lookup_var(lookup, "ION_EC2_SUBNETS") {
            for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (zone, subnet) = pair.split_once('=').ok_or_else(|| {
                    Error::invalid_config(format!(
                        "subnets (ION_EC2_SUBNETS): expected zone=subnet-id, got {pair:?}"
                    ))
                })?;
                c.subnets.insert(zone.trim().into(), subnet.trim().into());
            }
        }
        if let Some(list) = lookup_var(lookup, "ION_EC2_SECURITY_GROUP_IDS") {
            c.security_group_ids = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        c.instance_profile = lookup_var(lookup, "ION_EC2_INSTANCE_PROFILE");
        c.key_name = lookup_var(lookup, "ION_EC2_KEY_NAME");
        if let Some(n) = parse_var(lookup, "ION_EC2_DESCRIBE_PAGE_SIZE")? {
            c.describe_page_size = n;
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks every field, naming the offending key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::invalid_config(format!("{key}: {why}")));
        if !resource_id_ok(&self.image_id, "ami-") {
            return bad(
                "image_id (ION_EC2_IMAGE_ID)",
                format!("expected ami-…, got {:?}", self.image_id),
            );
        }
        let t = self.instance_type.as_bytes();
        if t.is_empty()
            || !t
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
            || !self.instance_type.contains('.')
        {
            return bad(
                "instance_type (ION_EC2_INSTANCE_TYPE)",
                format!(
                    "expected a type like t3.micro, got {:?}",
                    self.instance_type
                ),
            );
        }
        for (zone, subnet) in &self.subnets {
            if Zone::parse(zone).is_err() || !resource_id_ok(subnet, "subnet-") {
                return bad(
                    "subnets (ION_EC2_SUBNETS)",
                    format!("expected zone=subnet-…, got {zone}={subnet}"),
                );
            }
        }
        for sg in &self.security_group_ids {
            if !resource_id_ok(sg, "sg-") {
                return bad(
                    "security_group_ids (ION_EC2_SECURITY_GROUP_IDS)",
                    format!("expected sg-…, got {sg:?}"),
                );
            }
        }
        for (key, v) in [
            (
                "instance_profile (ION_EC2_INSTANCE_PROFILE)",
                &self.instance_profile,
            ),
            ("key_name (ION_EC2_KEY_NAME)", &self.key_name),
        ] {
            if v.as_deref().is_some_and(|s| !name_ok(s)) {
                return bad(key, format!("not a valid name: {v:?}"));
            }
        }
        if self.bootstrap_command.is_empty()
            || self.bootstrap_command.iter().any(|w| w.contains('\0'))
            || self.bootstrap_command[0].is_empty()
        {
            return bad(
                "bootstrap_command",
                "must name a program and contain no NUL bytes".into(),
            );
        }
        if !(5..=1000).contains(&self.describe_page_size) {
            return bad(
                "describe_page_size (ION_EC2_DESCRIBE_PAGE_SIZE)",
                format!("must be 5..=1000, got {}", self.describe_page_size),
            );
        }
        Ok(())
    }
}

/// The EC2 `ClientToken` for an idempotency key: a digest, so it is at most 64 ASCII characters
/// and one key always maps to one token.
pub(crate) fn client_token(key: &IdempotencyKey) -> String {
    hex::encode(sha2::Sha256::digest(format!("ion-launch:{key}").as_bytes()))
}

/// Maps an EC2 instance state to ion's. We never stop instances, so `stopped` means the
/// instance went down without being asked (`Crashed`); `shutting-down` is the irreversible start
/// of a termination, so it already counts as `Terminated`.
pub(crate) fn instance_state(name: Option<&InstanceStateName>) -> InstanceState {
    match name {
        Some(InstanceStateName::Pending) | None => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(InstanceStateName::Stopped) => InstanceState::Crashed,
        Some(InstanceStateName::ShuttingDown) | Some(InstanceStateName::Terminated) => {
            InstanceState::Terminated
        }
        Some(_) => InstanceState::Pending,
    }
}

/// Refuses SDK-level retries of a `RunInstances` whose response was lost (connection reset,
/// timeout): on a service that ignores `ClientToken` such a retry could create a second
/// instance. [`Ec2Compute::launch`] reconciles by idempotency tag and re-issues instead.
#[derive(Debug)]
struct LostLaunchResponsesAreReconciled;

impl ClassifyRetry for LostLaunchResponsesAreReconciled {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.output_or_error() {
            Some(Err(e))
                if e.is_connector_error() || e.is_timeout_error() || e.is_response_error() =>
            {
                RetryAction::RetryForbidden
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "ion lost RunInstances responses are reconciled by tag"
    }
}

/// `Compute` on EC2.
///
/// A launch first looks for an instance tagged with its idempotency key and returns it if found;
/// otherwise it calls `RunInstances` with a `ClientToken` derived from the key and the tags
/// `ion:tenant`, `ion:app`, `ion:version`, `ion:port`, `ion:idempotency-key` and
/// `ion:managed-by=ion` (on the instance and its volumes), and a user-data bootstrap script. A
/// lost response is reconciled by looking the key up again before re-issuing. Only instances
/// tagged `ion:managed-by=ion` are described or terminated.
#[derive(Clone)]
pub struct Ec2Compute {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: Ec2ComputeConfig,
    launch_attempts: u32,
    zone_names: OnceCell<Vec<Zone>>,
}

impl fmt::Debug for Ec2Compute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2Compute")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn tag(key: &str, value: impl Into<String>) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn filter(name: &str, values: impl IntoIterator<Item = impl Into<String>>) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.into_iter().map(Into::into).collect()))
        .build()
}

fn tag_value<'a>(instance: &'a aws_sdk_ec2::types::Instance, key: &str) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn timestamp(dt: Option<&aws_smithy_types::DateTime>) -> Timestamp {
    dt.and_then(|d| d.to_millis().ok())
        .map(Timestamp::from_millis)
        .unwrap_or(Timestamp::EPOCH)
}

/// Reads an ion instance from an EC2 one; `None` for an instance whose ion tags are missing or
/// malformed (not ours, or tampered with).
fn to_instance(i: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    let id = InstanceId::parse(i.instance_id()?).ok()?;
    let tenant = TenantId::parse(tag_value(i, TAG_TENANT)?).ok()?;
    let app = AppId::parse(tag_value(i, TAG_APP)?).ok()?;
    let version = Version(tag_value(i, TAG_VERSION)?.parse().ok()?);
    let idempotency_key = IdempotencyKey::parse(tag_value(i, TAG_IDEMPOTENCY_KEY)?).ok()?;
    let zone = Zone::parse(i.placement()?.availability_zone()?).ok()?;
    let port: Option<u16> = tag_value(i, TAG_PORT).and_then(|p| p.parse().ok());
    let ip: Option<IpAddr> = i.private_ip_address().and_then(|a| a.parse().ok());
    let address = match (ip, port) {
        (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
        _ => None,
    };
    Some(Instance {
        id,
        tenant,
        app,
        version,
        zone,
        state: instance_state(i.state().and_then(|s| s.name())),
        address,
        launched_at: timestamp(i.launch_time()),
        idempotency_key,
    })
}

impl Ec2Compute {
    /// Connects with `aws` and launches per `config`.
    pub async fn new(aws: &AwsConfig, config: Ec2ComputeConfig) -> Result<Self> {
        config.validate()?;
        let shared = aws.load_sdk_config().await?;
        Ok(Self {
            inner: Arc::new(Inner {
                client: Client::new(&shared),
                config,
                launch_attempts: aws.max_attempts,
                zone_names: OnceCell::new(),
            }),
        })
    }

    /// Waits (with the SDK's `InstanceRunning` waiter) until the instance runs, at most
    /// `max_wait`, and returns it.
    pub async fn wait_until_running(
        &self,
        id: &InstanceId,
        max_wait: Duration,
    ) -> Result<Instance> {
        use aws_sdk_ec2::client::Waiters as _;
        self.inner
            .client
            .wait_until_instance_running()
            .instance_ids(id.as_str())
            .wait(max_wait)
            .await
            .map_err(|e| map_waiter_error("ec2 wait_until_instance_running", e))?;
        self.describe_ids(&[id.as_str().to_owned()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found(format!("instance {id} is not an ion instance")))
    }

    async fn known_zones(&self) -> Result<&Vec<Zone>> {
        self.inner
            .zone_names
            .get_or_try_init(|| async {
                Ok::<_, Error>(self.zones().await?.into_iter().map(|z| z.zone).collect())
            })
            .await
    }

    /// Every ion instance matching `filters`, all pages.
    async fn describe_filtered(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<aws_sdk_ec2::types::Instance>> {
        let mut pages = self
            .inner
            .client
            .describe_instances()
            .set_filters(Some(filters))
            .into_paginator()
            .page_size(self.inner.config.describe_page_size)
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk_error("ec2 describe_instances", e, None))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
        }
        Ok(out)
    }

    async fn describe_ids(&self, ids: &[String]) -> Result<Vec<Instance>> {
        let out = self
            .inner
            .client
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| map_sdk_error("ec2 describe_instances", e, None))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| tag_value(i, TAG_MANAGED_BY) == Some(MANAGED_BY))
            .filter_map(to_instance)
            .collect())
    }

    /// The instance launched with `key`, in any state, if there is one.
    async fn find_by_key(&self, key: &IdempotencyKey) -> Result<Option<Instance>> {
        let found = self
            .describe_filtered(vec![
                filter(&format!("tag:{TAG_MANAGED_BY}"), [MANAGED_BY]),
                filter(&format!("tag:{TAG_IDEMPOTENCY_KEY}"), [key.as_str()]),
            ])
            .await?;
        let mut found: Vec<Instance> = found.iter().filter_map(to_instance).collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        if found.len() > 1 {
            tracing::warn!(key = %key, count = found.len(), "several instances carry one idempotency key; returning the first by id");
        }
        Ok(found.into_iter().next())
    }

    async fn run_instance(&self, request: &LaunchRequest) -> Result<Instance> {
        let c = &self.inner.config;
        let tags = vec![
            tag(TAG_TENANT, request.tenant.as_str()),
            tag(TAG_APP, request.app.as_str()),
            tag(TAG_VERSION, request.version.0.to_string()),
            tag(TAG_PORT, request.port.to_string()),
            tag(TAG_IDEMPOTENCY_KEY, request.idempotency_key.as_str()),
            tag(TAG_MANAGED_BY, MANAGED_BY),
            tag(
                "Name",
                format!("{}-{}-v{}", request.tenant, request.app, request.version.0),
            ),
        ];
        let user_data = render_bootstrap(request, &c.bootstrap_command);
        let mut req = self
            .inner
            .client
            .run_instances()
            .image_id(&c.image_id)
            .instance_type(InstanceType::from(c.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(client_token(&request.idempotency_key))
            .user_data(aws_smithy_types::base64::encode(user_data.as_bytes()))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags.clone()))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags))
                    .build(),
            )
            .set_security_group_ids(
                (!c.security_group_ids.is_empty()).then(|| c.security_group_ids.clone()),
            )
            .set_key_name(c.key_name.clone());
        if let Some(profile) = &c.instance_profile {
            req = req.iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(profile)
                    .build(),
            );
        }
        req = match c.subnets.get(request.zone.as_str()) {
            Some(subnet) => req.subnet_id(subnet),
            None => req.placement(
                Placement::builder()
                    .availability_zone(request.zone.as_str())
                    .build(),
            ),
        };
        let out = req
            .customize()
            .config_override(
                aws_sdk_ec2::config::Builder::default()
                    .retry_classifier(LostLaunchResponsesAreReconciled),
            )
            .send()
            .await
            .map_err(|e| map_sdk_error("ec2 run_instances", e, Some(&request.zone)))?;
        let launched = out
            .instances()
            .first()
            .ok_or_else(|| Error::unexpected("ec2 run_instances: no instance in the response"))?;
        let id = launched
            .instance_id()
            .ok_or_else(|| Error::unexpected("ec2 run_instances: instance without an id"))?;
        let id = InstanceId::parse(id).map_err(|e| {
            Error::unexpected(format!("ec2 run_instances: instance id {id:?}: {e}"))
        })?;
        let ip: Option<IpAddr> = launched.private_ip_address().and_then(|a| a.parse().ok());
        tracing::info!(instance = %id, tenant = %request.tenant, app = %request.app, zone = %request.zone, "launched instance");
        Ok(Instance {
            id,
            tenant: request.tenant.clone(),
            app: request.app.clone(),
            version: request.version,
            zone: launched
                .placement()
                .and_then(|p| p.availability_zone())
                .and_then(|z| Zone::parse(z).ok())
                .unwrap_or_else(|| request.zone.clone()),
            state: instance_state(launched.state().and_then(|s| s.name())),
            address: ip.map(|ip| SocketAddr::new(ip, request.port)),
            launched_at: timestamp(launched.launch_time()),
            idempotency_key: request.idempotency_key.clone(),
        })
    }
}

#[async_trait]
impl Compute for Ec2Compute {
    fn capabilities(&self) -> ComputeCapabilities {
        ComputeCapabilities {
            runs_workloads: true,
            real_zones: true,
        }
    }

    async fn zones(&self) -> Result<Vec<ZoneInfo>> {
        let out = self
            .inner
            .client
            .describe_availability_zones()
            .send()
            .await
            .map_err(|e| map_sdk_error("ec2 describe_availability_zones", e, None))?;
        let subnets = &self.inner.config.subnets;
        let mut zones: Vec<ZoneInfo> = out
            .availability_zones()
            .iter()
            .filter(|z| z.zone_type().is_none_or(|t| t == "availability-zone"))
            .filter_map(|z| {
                let zone = Zone::parse(z.zone_name()?).ok()?;
                if !subnets.is_empty() && !subnets.contains_key(zone.as_str()) {
                    return None;
                }
                Some(ZoneInfo {
                    zone,
                    available: z.state() == Some(&AvailabilityZoneState::Available),
                })
            })
            .collect();
        zones.sort_by(|a, b| a.zone.cmp(&b.zone));
        zones.dedup_by(|a, b| a.zone == b.zone);
        Ok(zones)
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Instance> {
        if !self.known_zones().await?.contains(&request.zone) {
            return Err(Error::invalid_input(format!(
                "ec2 launch: unknown zone {}",
                request.zone
            )));
        }
        if request.port == 0 {
            return Err(Error::invalid_input("ec2 launch: port must not be zero"));
        }
        let mut last = None;
        for attempt in 1..=self.inner.launch_attempts.max(1) {
            if let Some(existing) = self.find_by_key(&request.idempotency_key).await? {
                return Ok(existing);
            }
            match self.run_instance(&request).await {
                Ok(instance) => return Ok(instance),
                Err(e) if response_lost(&e) => {
                    tracing::warn!(key = %request.idempotency_key, attempt, error = %e, "launch response lost; reconciling by idempotency tag");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        // The last attempt's request may still have landed: one more look before giving up.
        if let Some(existing) = self.find_by_key(&request.idempotency_key).await? {
            return Ok(existing);
        }
        Err(last.unwrap_or_else(|| Error::unavailable("ec2 launch: no attempt made")))
    }

    async fn terminate(&self, id: &InstanceId) -> Result<()> {
        let out = self
            .inner
            .client
            .describe_instances()
            .instance_ids(id.as_str())
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let e = map_sdk_error("ec2 describe_instances", e, None);
                // An id EC2 does not know, or one not even shaped like an EC2 id, is gone.
                return match e.kind() {
                    ion_core::ErrorKind::NotFound | ion_core::ErrorKind::InvalidInput => Ok(()),
                    _ => Err(e),
                };
            }
        };
        let Some(found) = out.reservations().iter().flat_map(|r| r.instances()).next() else {
            return Ok(());
        };
        if tag_value(found, TAG_MANAGED_BY) != Some(MANAGED_BY) {
            return Err(Error::permission_denied(format!(
                "ec2 terminate: refusing to terminate {id}, which ion did not launch"
            )));
        }
        if matches!(
            found.state().and_then(|s| s.name()),
            Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
        ) {
            return Ok(());
        }
        match self
            .inner
            .client
            .terminate_instances()
            .instance_ids(id.as_str())
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(instance = %id, "terminated instance");
                Ok(())
            }
            Err(e) => {
                let e = map_sdk_error("ec2 terminate_instances", e, None);
                if e.kind() == ion_core::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn describe(&self, f: &InstanceFilter) -> Result<Vec<Instance>> {
        let mut filters = vec![filter(&format!("tag:{TAG_MANAGED_BY}"), [MANAGED_BY])];
        if let Some(t) = &f.tenant {
            filters.push(filter(&format!("tag:{TAG_TENANT}"), [t.as_str()]));
        }
        if let Some(a) = &f.app {
            filters.push(filter(&format!("tag:{TAG_APP}"), [a.as_str()]));
        }
        if !f.include_gone {
            filters.push(filter(
                "instance-state-name",
                ["pending", "running", "stopping"],
            ));
        }
        let raw = self.describe_filtered(filters).await?;
        let mut out: Vec<Instance> = raw
            .iter()
            .filter_map(|i| {
                let parsed = to_instance(i);
                if parsed.is_none() {
                    tracing::warn!(
                        instance = i.instance_id().unwrap_or("?"),
                        "skipping an instance with malformed ion tags"
                    );
                }
                parsed
            })
            .filter(|i| f.matches(i))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ion_core::ErrorKind;

    use super::*;

    #[test]
    fn states_map_to_ion_states() {
        use InstanceStateName as S;
        let cases = [
            (S::Pending, InstanceState::Pending),
            (S::Running, InstanceState::Running),
            (S::Stopping, InstanceState::Stopping),
            (S::Stopped, InstanceState::Crashed),
            (S::ShuttingDown, InstanceState::Terminated),
            (S::Terminated, InstanceState::Terminated),
        ];
        for (ec2, ion) in cases {
            assert_eq!(instance_state(Some(&ec2)), ion, "{ec2:?}");
        }
    }

    #[test]
    fn client_tokens_fit_ec2_and_follow_the_key() {
        let a = IdempotencyKey::parse("launch-1").unwrap();
        let b = IdempotencyKey::parse("launch-2").unwrap();
        assert_eq!(client_token(&a), client_token(&a));
        assert_ne!(client_token(&a), client_token(&b));
        assert!(client_token(&a).len() <= 64);
        assert!(client_token(&a).bytes().all(|c| c.is_ascii_hexdigit()));
    }

    fn from_map(pairs: &[(&str, &str)]) -> Result<Ec2ComputeConfig> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ec2ComputeConfig::from_lookup(&move |k| map.get(k).cloned())
    }

    #[test]
    fn config_from_env_and_its_errors() {
        let c = from_map(&[
            ("ION_EC2_IMAGE_ID", "ami-12c6146b"),
            (
                "ION_EC2_SUBNETS",
                "us-east-1a=subnet-aa, us-east-1b=subnet-bb",
            ),
            ("ION_EC2_SECURITY_GROUP_IDS", "sg-1,sg-2"),
            ("ION_EC2_DESCRIBE_PAGE_SIZE", "5"),
        ])
        .unwrap();
        assert_eq!(
            c.subnets.get("us-east-1b").map(String::as_str),
            Some("subnet-bb")
        );
        assert_eq!(c.security_group_ids, ["sg-1", "sg-2"]);
        assert_eq!(c.describe_page_size, 5);

        for (pairs, key) in [
            (vec![], "ION_EC2_IMAGE_ID"),
            (vec![("ION_EC2_IMAGE_ID", "ubuntu")], "ION_EC2_IMAGE_ID"),
            (
                vec![
                    ("ION_EC2_IMAGE_ID", "ami-1"),
                    ("ION_EC2_INSTANCE_TYPE", "big"),
                ],
                "ION_EC2_INSTANCE_TYPE",
            ),
            (
                vec![
                    ("ION_EC2_IMAGE_ID", "ami-1"),
                    ("ION_EC2_SUBNETS", "us-east-1a"),
                ],
                "ION_EC2_SUBNETS",
            ),
            (
                vec![
                    ("ION_EC2_IMAGE_ID", "ami-1"),
                    ("ION_EC2_SUBNETS", "a=vpc-1"),
                ],
                "ION_EC2_SUBNETS",
            ),
            (
                vec![
                    ("ION_EC2_IMAGE_ID", "ami-1"),
                    ("ION_EC2_SECURITY_GROUP_IDS", "default"),
                ],
                "ION_EC2_SECURITY_GROUP_IDS",
            ),
            (
                vec![
                    ("ION_EC2_IMAGE_ID", "ami-1"),
                    ("ION_EC2_DESCRIBE_PAGE_SIZE", "2"),
                ],
                "ION_EC2_DESCRIBE_PAGE_SIZE",
            ),
        ] {
            let e = from_map(&pairs).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            assert!(e.message().contains(key), "{e} should name {key}");
        }
    }

    #[test]
    fn instances_without_valid_ion_tags_are_not_read() {
        let base = aws_sdk_ec2::types::Instance::builder()
            .instance_id("i-0123456789abcdef0")
            .placement(Placement::builder().availability_zone("us-east-1a").build())
            .private_ip_address("10.0.0.7");
        let tagged = |tenant: &str| {
            base.clone()
                .tags(tag(TAG_TENANT, tenant))
                .tags(tag(TAG_APP, "web"))
                .tags(tag(TAG_VERSION, "4"))
                .tags(tag(TAG_PORT, "8080"))
                .tags(tag(TAG_IDEMPOTENCY_KEY, "k-1"))
                .build()
        };
        let good = to_instance(&tagged("acme")).expect("valid tags");
        assert_eq!(good.address, Some("10.0.0.7:8080".parse().unwrap()));
        assert_eq!(good.version, Version(4));
        assert!(to_instance(&tagged("Acme; rm -rf /")).is_none());
        assert!(to_instance(&base.build()).is_none());
    }
}
