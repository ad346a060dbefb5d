//! `EbsSnapshots`: snapshots of the EBS volumes tagged for a tenant, an app or a platform
//! component, tagged themselves, with keep-N / max-age retention and a listing for restore.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, ResourceType, SnapshotState, Tag, TagSpecification};
use aws_sdk_ec2::Client;
use ion_core::{AppId, Error, Result, TenantId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::AwsConfig;
use crate::ec2::{MANAGED_BY, TAG_APP, TAG_MANAGED_BY, TAG_TENANT};
use crate::error::{map_sdk_error, map_waiter_error};

/// Tag naming the platform component a volume belongs to (`mongo`, `logs`, …).
pub const TAG_PLATFORM: &str = "ion:platform";
/// Tag on a snapshot naming the volume it was taken from.
pub const TAG_VOLUME: &str = "ion:volume";
/// Tag on a snapshot holding when ion took it, in Unix milliseconds (retention reads this).
pub const TAG_TAKEN_AT: &str = "ion:taken-at";

/// Which volumes a snapshot run covers (always only volumes tagged `ion:managed-by=ion`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope")]
pub enum SnapshotScope {
    /// One tenant's app (`ion:tenant` and `ion:app`).
    App {
        /// The tenant.
        tenant: TenantId,
        /// The app.
        app: AppId,
    },
    /// Every volume of one tenant (`ion:tenant`).
    Tenant {
        /// The tenant.
        tenant: TenantId,
    },
    /// A platform component's volumes (`ion:platform`), e.g. the document store's.
    Platform {
        /// The component, validated like an app id.
        component: AppId,
    },
}

impl SnapshotScope {
    fn tags(&self) -> Vec<(&'static str, String)> {
        match self {
            SnapshotScope::App { tenant, app } => {
                vec![(TAG_TENANT, tenant.to_string()), (TAG_APP, app.to_string())]
            }
            SnapshotScope::Tenant { tenant } => vec![(TAG_TENANT, tenant.to_string())],
            SnapshotScope::Platform { component } => vec![(TAG_PLATFORM, component.to_string())],
        }
    }

    fn filters(&self) -> Vec<Filter> {
        let mut out = vec![tag_filter(TAG_MANAGED_BY, MANAGED_BY)];
        for (k, v) in self.tags() {
            out.push(tag_filter(k, &v));
        }
        out
    }
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

/// How long snapshots are kept, per volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Keep at most this many of each volume's newest snapshots (at least 1).
    pub keep_last: usize,
    /// Also delete snapshots older than this, except each volume's newest.
    pub max_age: Option<Duration>,
}

/// The state of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EbsSnapshotState {
    /// Being taken.
    Pending,
    /// Complete and restorable.
    Completed,
    /// Failed; not restorable.
    Failed,
}

/// One snapshot ion took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EbsSnapshot {
    /// The snapshot id (`snap-…`).
    pub id: String,
    /// The volume it was taken from (`vol-…`).
    pub volume_id: String,
    /// When ion took it.
    pub taken_at: Timestamp,
    /// Its state.
    pub state: EbsSnapshotState,
    /// The volume size in GiB.
    pub size_gib: i32,
}

/// Which snapshots `policy` expires at `now`: per volume, all but the newest `keep_last`, and
/// among those kept, any older than `max_age` except the volume's newest. Pure, so retention
/// can be checked without touching AWS.
pub fn expired_snapshots(
    snapshots: &[EbsSnapshot],
    policy: RetentionPolicy,
    now: Timestamp,
) -> Vec<String> {
    let keep_last = policy.keep_last.max(1);
    let mut by_volume: BTreeMap<&str, Vec<&EbsSnapshot>> = BTreeMap::new();
    for s in snapshots {
        by_volume.entry(&s.volume_id).or_default().push(s);
    }
    let mut expired = Vec::new();
    for list in by_volume.values_mut() {
        // Newest first; ties broken by id so the choice is deterministic.
        list.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then_with(|| b.id.cmp(&a.id)));
        for (rank, s) in list.iter().enumerate() {
            let too_many = rank >= keep_last;
            let too_old = rank > 0
                && policy
                    .max_age
                    .is_some_and(|age| now.since(s.taken_at) > age);
            if too_many || too_old {
                expired.push(s.id.clone());
            }
        }
    }
    expired.sort();
    expired
}

/// Takes, lists and expires EBS snapshots.
#[derive(Clone)]
pub struct EbsSnapshots {
    client: Client,
}

impl fmt::Debug for EbsSnapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EbsSnapshots").finish_non_exhaustive()
    }
}

fn to_snapshot(s: &aws_sdk_ec2::types::Snapshot) -> Option<EbsSnapshot> {
    let tag = |k: &str| {
        s.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
    };
    let taken_at = tag(TAG_TAKEN_AT)
        .and_then(|v| v.parse().ok())
        .map(Timestamp::from_millis)
        .or_else(|| {
            s.start_time()
                .and_then(|d| d.to_millis().ok())
                .map(Timestamp::from_millis)
        })?;
    Some(EbsSnapshot {
        id: s.snapshot_id()?.to_owned(),
        volume_id: tag(TAG_VOLUME).or(s.volume_id())?.to_owned(),
        taken_at,
        state: match s.state() {
            Some(SnapshotState::Completed) => EbsSnapshotState::Completed,
            Some(SnapshotState::Error) => EbsSnapshotState::Failed,
            _ => EbsSnapshotState::Pending,
        },
        size_gib: s.volume_size().unwrap_or(0),
    })
}

impl EbsSnapshots {
    /// Connects with `aws`.
    pub async fn new(aws: &AwsConfig) -> Result<Self> {
        let shared = aws.load_sdk_config().await?;
        Ok(Self {
            client: Client::new(&shared),
        })
    }

    /// Snapshots every volume in `scope`, tagging each snapshot with the scope's tags, the
    /// volume id and `now`. Returns the snapshots started (possibly still pending).
    pub async fn snapshot(
        &self,
        scope: &SnapshotScope,
        now: Timestamp,
    ) -> Result<Vec<EbsSnapshot>> {
        let mut volumes = Vec::new();
        let mut pages = self
            .client
            .describe_volumes()
            .set_filters(Some(scope.filters()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk_error("ec2 describe_volumes", e, None))?;
            volumes.extend(
                page.volumes()
                    .iter()
                    .filter_map(|v| v.volume_id().map(str::to_owned)),
            );
        }
        volumes.sort();
        let mut out = Vec::with_capacity(volumes.len());
        for volume in volumes {
            let mut tags: Vec<Tag> = scope
                .tags()
                .into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect();
            tags.push(Tag::builder().key(TAG_MANAGED_BY).value(MANAGED_BY).build());
            tags.push(Tag::builder().key(TAG_VOLUME).value(&volume).build());
            tags.push(
                Tag::builder()
                    .key(TAG_TAKEN_AT)
                    .value(now.as_millis().to_string())
                    .build(),
            );
            let created = self
                .client
                .create_snapshot()
                .volume_id(&volume)
                .description(format!("ion snapshot of {volume}"))
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Snapshot)
                        .set_tags(Some(tags))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| map_sdk_error("ec2 create_snapshot", e, None))?;
            let id = created
                .snapshot_id()
                .ok_or_else(|| Error::unexpected("ec2 create_snapshot: no snapshot id"))?;
            tracing::info!(snapshot = id, volume = %volume, "started ebs snapshot");
            out.push(EbsSnapshot {
                id: id.to_owned(),
                volume_id: volume,
                taken_at: now,
                state: match created.state() {
                    Some(SnapshotState::Completed) => EbsSnapshotState::Completed,
                    Some(SnapshotState::Error) => EbsSnapshotState::Failed,
                    _ => EbsSnapshotState::Pending,
                },
                size_gib: created.volume_size().unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Waits (with the SDK's `SnapshotCompleted` waiter) until every snapshot in `ids` is
    /// complete, at most `max_wait`.
    pub async fn wait_until_completed(&self, ids: &[String], max_wait: Duration) -> Result<()> {
        use aws_sdk_ec2::client::Waiters as _;
        if ids.is_empty() {
            return Ok(());
        }
        self.client
            .wait_until_snapshot_completed()
            .set_snapshot_ids(Some(ids.to_vec()))
            .wait(max_wait)
            .await
            .map_err(|e| map_waiter_error("ec2 wait_until_snapshot_completed", e))?;
        Ok(())
    }

    /// Every snapshot ion took in `scope`, newest first (the first completed one per volume is
    /// what a restore uses).
    pub async fn list(&self, scope: &SnapshotScope) -> Result<Vec<EbsSnapshot>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(scope.filters()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk_error("ec2 describe_snapshots", e, None))?;
            out.extend(page.snapshots().iter().filter_map(to_snapshot));
        }
        out.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then_with(|| b.id.cmp(&a.id)));
        Ok(out)
    }

    /// Deletes the snapshots in `scope` that `policy` expires at `now`; returns their ids.
    pub async fn apply_retention(
        &self,
        scope: &SnapshotScope,
        policy: RetentionPolicy,
        now: Timestamp,
    ) -> Result<Vec<String>> {
        let expired = expired_snapshots(&self.list(scope).await?, policy, now);
        for id in &expired {
            match self.client.delete_snapshot().snapshot_id(id).send().await {
                Ok(_) => tracing::info!(snapshot = %id, "deleted expired ebs snapshot"),
                Err(e) => {
                    let e = map_sdk_error("ec2 delete_snapshot", e, None);
                    if e.kind() != ion_core::ErrorKind::NotFound {
                        return Err(e);
                    }
                }
            }
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn snap(id: usize, volume: usize, taken_ms: i64) -> EbsSnapshot {
        EbsSnapshot {
            id: format!("snap-{id:04}"),
            volume_id: format!("vol-{volume}"),
            taken_at: Timestamp::from_millis(taken_ms),
            state: EbsSnapshotState::Completed,
            size_gib: 8,
        }
    }

    #[test]
    fn keeps_the_newest_n_per_volume() {
        let snaps = vec![
            snap(1, 1, 10),
            snap(2, 1, 30),
            snap(3, 1, 20),
            snap(4, 2, 5),
        ];
        let policy = RetentionPolicy {
            keep_last: 2,
            max_age: None,
        };
        assert_eq!(
            expired_snapshots(&snaps, policy, Timestamp::from_millis(40)),
            ["snap-0001"]
        );
    }

    #[test]
    fn max_age_never_removes_a_volumes_newest() {
        let snaps = vec![snap(1, 1, 0), snap(2, 1, 1_000)];
        let policy = RetentionPolicy {
            keep_last: 5,
            max_age: Some(Duration::from_millis(10)),
        };
        let now = Timestamp::from_millis(1_000_000);
        assert_eq!(expired_snapshots(&snaps, policy, now), ["snap-0001"]);
    }

    proptest! {
        #[test]
        fn retention_invariants(
            raw in proptest::collection::vec((0usize..4, 0i64..1_000), 0..40),
            keep_last in 0usize..5,
            max_age in proptest::option::of(0u64..1_000),
            now in 0i64..2_000,
        ) {
            let snaps: Vec<EbsSnapshot> =
                raw.iter().enumerate().map(|(i, (v, t))| snap(i, *v, *t)).collect();
            let policy = RetentionPolicy { keep_last, max_age: max_age.map(Duration::from_millis) };
            let now = Timestamp::from_millis(now);
            let expired: BTreeSet<String> =
                expired_snapshots(&snaps, policy, now).into_iter().collect();
            let volumes: BTreeSet<&str> = snaps.iter().map(|s| s.volume_id.as_str()).collect();
            for v in volumes {
                let mut mine: Vec<&EbsSnapshot> = snaps.iter().filter(|s| s.volume_id == v).collect();
                mine.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then_with(|| b.id.cmp(&a.id)));
                let kept: Vec<&&EbsSnapshot> = mine.iter().filter(|s| !expired.contains(&s.id)).collect();
                // Every volume keeps its newest snapshot, and never more than keep_last.
                prop_assert_eq!(kept.first().map(|s| &s.id), Some(&mine[0].id));
                prop_assert!(kept.len() <= keep_last.max(1));
                // Whatever was kept besides the newest is within max_age.
                for s in kept.iter().skip(1) {
                    if let Some(age) = policy.max_age {
                        prop_assert!(now.since(s.taken_at) <= age);
                    }
                }
                // Nothing is deleted that both rules would keep.
                for (rank, s) in mine.iter().enumerate() {
                    let young = policy.max_age.is_none_or(|a| now.since(s.taken_at) <= a);
                    if rank < keep_last.max(1) && (rank == 0 || young) {
                        prop_assert!(!expired.contains(&s.id));
                    }
                }
            }
        }
    }
}
