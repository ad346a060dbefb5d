//! EbsSnapshots against moto: snapshot the volumes tagged for an app, tag the snapshots, list
//! them for restore, and apply keep-N and max-age retention.

mod common;

use std::time::Duration;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use ion_aws::{EbsSnapshotState, EbsSnapshots, RetentionPolicy, SnapshotScope, TAG_TAKEN_AT};
use ion_core::testkit::{peer_unreachable, peer_var, unique_name};
use ion_core::{AppId, TenantId, Timestamp};

use common::*;

async fn volume(raw: &aws_sdk_ec2::Client, tags: &[(&str, &str)]) -> String {
    let tags: Vec<Tag> = tags
        .iter()
        .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
        .collect();
    raw.create_volume()
        .availability_zone("us-east-1a")
        .size(8)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Volume)
                .set_tags(Some(tags))
                .build(),
        )
        .send()
        .await
        .expect("create volume")
        .volume_id()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn snapshots_of_an_app_are_tagged_listed_and_expired() {
    let what = "ebs snapshots";
    let Some(endpoint) = peer_var(EC2_VAR, what) else {
        return;
    };
    let raw = raw_ec2(&endpoint).await;
    let snapshots = EbsSnapshots::new(&aws_config(&endpoint)).await.unwrap();
    let tenant = TenantId::parse(&unique_name("t")).unwrap();
    let app = AppId::parse(&unique_name("a")).unwrap();
    let other = AppId::parse(&unique_name("b")).unwrap();
    let scope = SnapshotScope::App {
        tenant: tenant.clone(),
        app: app.clone(),
    };
    let mine = [
        ("ion:tenant", tenant.as_str()),
        ("ion:app", app.as_str()),
        ("ion:managed-by", "ion"),
    ];
    let v1 = volume(&raw, &mine).await;
    let v2 = volume(&raw, &mine).await;
    // Same tenant, another app; and an unmanaged volume with the same tags minus managed-by.
    volume(
        &raw,
        &[
            ("ion:tenant", tenant.as_str()),
            ("ion:app", other.as_str()),
            ("ion:managed-by", "ion"),
        ],
    )
    .await;
    volume(&raw, &mine[..2]).await;

    let day = Duration::from_secs(86_400);
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let mut taken = Vec::new();
    for d in 0..4 {
        let now = t0.plus(day * d);
        let round = match snapshots.snapshot(&scope, now).await {
            Ok(r) => r,
            Err(e) => return peer_unreachable(EC2_VAR, what, &e).unwrap_or(()),
        };
        let mut vols: Vec<&str> = round.iter().map(|s| s.volume_id.as_str()).collect();
        vols.sort();
        let mut expected = vec![v1.as_str(), v2.as_str()];
        expected.sort();
        assert_eq!(vols, expected, "exactly the app's managed volumes");
        let ids: Vec<String> = round.iter().map(|s| s.id.clone()).collect();
        snapshots
            .wait_until_completed(&ids, Duration::from_secs(60))
            .await
            .unwrap();
        taken.extend(round);
    }

    // Tagged: the scope, the volume and the time ion took it.
    let raw_snap = raw
        .describe_snapshots()
        .snapshot_ids(&taken[0].id)
        .send()
        .await
        .unwrap();
    let tags = raw_snap.snapshots()[0].tags();
    let get = |k: &str| {
        tags.iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
    };
    assert_eq!(get("ion:tenant"), Some(tenant.as_str()));
    assert_eq!(get("ion:app"), Some(app.as_str()));
    assert_eq!(get("ion:volume"), Some(taken[0].volume_id.as_str()));
    assert_eq!(get(TAG_TAKEN_AT), Some(t0.as_millis().to_string().as_str()));

    let listed = snapshots.list(&scope).await.unwrap();
    assert_eq!(listed.len(), 8);
    assert!(listed
        .iter()
        .all(|s| s.state == EbsSnapshotState::Completed));
    assert!(
        listed.windows(2).all(|w| w[0].taken_at >= w[1].taken_at),
        "newest first"
    );
    assert_eq!(listed[0].taken_at, t0.plus(day * 3));

    // Keep two per volume: the two oldest rounds go.
    let now = t0.plus(day * 4);
    let deleted = snapshots
        .apply_retention(
            &scope,
            RetentionPolicy {
                keep_last: 2,
                max_age: None,
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(deleted.len(), 4);
    let left = snapshots.list(&scope).await.unwrap();
    assert_eq!(left.len(), 4);
    assert!(left.iter().all(|s| s.taken_at >= t0.plus(day * 2)));

    // Max age of a day and a half: each volume keeps only its newest.
    let deleted = snapshots
        .apply_retention(
            &scope,
            RetentionPolicy {
                keep_last: 10,
                max_age: Some(day + day / 2),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(deleted.len(), 2);
    let left = snapshots.list(&scope).await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|s| s.taken_at == t0.plus(day * 3)));

    // Retention is idempotent.
    let again = snapshots
        .apply_retention(
            &scope,
            RetentionPolicy {
                keep_last: 1,
                max_age: None,
            },
            now,
        )
        .await
        .unwrap();
    assert!(again.is_empty());
}
