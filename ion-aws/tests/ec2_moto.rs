//! Ec2Compute against moto: the Compute conformance suite, describe pagination, tags and user
//! data, the running waiter, and refusing to touch instances ion did not launch.

mod common;

use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use ion_aws::{Ec2Compute, Ec2ComputeConfig, TAG_IDEMPOTENCY_KEY, TAG_TENANT};
use ion_core::testkit::{peer_unreachable, peer_var, unique_name};
use ion_core::{
    AppId, ArtifactId, ArtifactRef, Compute, ErrorKind, IdempotencyKey, InstanceFilter,
    InstanceState, LaunchRequest, Sha256Digest, TenantId, Version, Zone,
};

use common::*;

/// An Amazon Linux image id among moto's default AMIs; a real account sets `ION_TEST_EC2_AMI`.
const MOTO_AMI: &str = "ami-12c6146b";

fn image() -> String {
    std::env::var("ION_TEST_EC2_AMI")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| MOTO_AMI.to_owned())
}

async fn compute(what: &str, page_size: i32) -> Option<Ec2Compute> {
    let endpoint = peer_var(EC2_VAR, what)?;
    let mut config = Ec2ComputeConfig::new(image());
    config.describe_page_size = page_size;
    let compute = Ec2Compute::new(&aws_config(&endpoint), config)
        .await
        .expect("ec2 compute");
    if let Err(e) = compute.zones().await {
        return peer_unreachable(EC2_VAR, what, &e);
    }
    Some(compute)
}

ion_core::compute_conformance!(ec2_moto, async {
    compute("ec2 compute conformance", 1000).await
});

fn request(tenant: &TenantId, app: &AppId, zone: &Zone) -> LaunchRequest {
    LaunchRequest {
        idempotency_key: IdempotencyKey::parse(&unique_name("k")).unwrap(),
        zone: zone.clone(),
        tenant: tenant.clone(),
        app: app.clone(),
        version: Version(2),
        artifact: ArtifactRef {
            id: ArtifactId::parse("art-1").unwrap(),
            sha256: Sha256Digest::of(b"binary"),
            length: 6,
        },
        port: 9090,
    }
}

fn owner() -> (TenantId, AppId) {
    (
        TenantId::parse(&unique_name("t")).unwrap(),
        AppId::parse(&unique_name("a")).unwrap(),
    )
}

#[tokio::test]
async fn describe_follows_pages_past_a_small_page_size() {
    let what = "ec2 describe pagination";
    let Some(compute) = compute(what, 5).await else {
        return;
    };
    let endpoint = peer_var(EC2_VAR, what).expect("checked above");
    let raw = raw_ec2(&endpoint).await;
    let (tenant, app) = owner();
    let zones: Vec<Zone> = compute
        .zones()
        .await
        .unwrap()
        .into_iter()
        .map(|z| z.zone)
        .collect();
    let mut launched = Vec::new();
    for i in 0..12 {
        launched.push(
            compute
                .launch(request(&tenant, &app, &zones[i % zones.len()]))
                .await
                .unwrap(),
        );
    }
    // The peer really pages at this size: one raw page holds 5 and points to more.
    let first = raw
        .describe_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{TAG_TENANT}"))
                .values(tenant.as_str())
                .build(),
        )
        .max_results(5)
        .send()
        .await
        .unwrap();
    let on_page: usize = first
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum();
    assert!(on_page <= 5, "a page of 5 held {on_page}");
    assert!(
        first.next_token().is_some(),
        "12 instances must not fit one page of 5"
    );

    let filter = InstanceFilter {
        tenant: Some(tenant.clone()),
        app: Some(app.clone()),
        include_gone: false,
    };
    let described = compute.describe(&filter).await.unwrap();
    let mut expected: Vec<_> = launched.iter().map(|i| i.id.clone()).collect();
    expected.sort();
    let got: Vec<_> = described.iter().map(|i| i.id.clone()).collect();
    assert_eq!(got, expected, "every instance once, ordered by id");
    for i in &described {
        let addr = i.address.expect("moto assigns a private ip");
        assert_eq!(addr.port(), 9090, "address uses the app port");
    }
    for i in &launched {
        compute.terminate(&i.id).await.unwrap();
    }
    assert!(compute.describe(&filter).await.unwrap().is_empty());
}

#[tokio::test]
async fn launch_tags_instance_and_volumes_and_passes_a_quoted_bootstrap() {
    let what = "ec2 tags and user data";
    let Some(compute) = compute(what, 1000).await else {
        return;
    };
    let endpoint = peer_var(EC2_VAR, what).expect("checked above");
    let raw = raw_ec2(&endpoint).await;
    let (tenant, app) = owner();
    let zone = Zone::parse("us-east-1b").unwrap();
    let req = request(&tenant, &app, &zone);
    let instance = compute.launch(req.clone()).await.unwrap();
    assert_eq!(instance.zone, zone);

    let out = raw
        .describe_instances()
        .instance_ids(instance.id.as_str())
        .send()
        .await
        .unwrap();
    let ec2 = &out.reservations()[0].instances()[0];
    let tags: std::collections::BTreeMap<&str, &str> = ec2
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert_eq!(tags.get("ion:tenant"), Some(&tenant.as_str()));
    assert_eq!(tags.get("ion:app"), Some(&app.as_str()));
    assert_eq!(tags.get("ion:version"), Some(&"2"));
    assert_eq!(tags.get("ion:managed-by"), Some(&"ion"));
    assert_eq!(
        tags.get(TAG_IDEMPOTENCY_KEY),
        Some(&req.idempotency_key.as_str())
    );
    assert_eq!(ec2.image_id(), Some(image().as_str()));

    let attr = raw
        .describe_instance_attribute()
        .instance_id(instance.id.as_str())
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = attr
        .user_data()
        .and_then(|u| u.value())
        .expect("user data set");
    let script = String::from_utf8(aws_smithy_types::base64::decode(encoded).unwrap()).unwrap();
    assert!(script.starts_with("#!/bin/sh\n"), "{script}");
    assert!(
        script.contains(&format!("ION_TENANT='{tenant}'\n")),
        "{script}"
    );
    assert!(script.contains("ION_PORT='9090'\n"), "{script}");

    // The root volume carries the same ownership tags, so EBS snapshots can find it.
    let volumes = raw
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(instance.id.as_str())
                .build(),
        )
        .send()
        .await
        .unwrap();
    for v in volumes.volumes() {
        let owner_tag = v.tags().iter().find(|t| t.key() == Some("ion:tenant"));
        assert_eq!(
            owner_tag.and_then(|t| t.value()),
            Some(tenant.as_str()),
            "{v:?}"
        );
    }
    compute.terminate(&instance.id).await.unwrap();
}

#[tokio::test]
async fn wait_until_running_uses_the_sdk_waiter() {
    let what = "ec2 running waiter";
    let Some(compute) = compute(what, 1000).await else {
        return;
    };
    let (tenant, app) = owner();
    let zone = compute.zones().await.unwrap()[0].zone.clone();
    let instance = compute.launch(request(&tenant, &app, &zone)).await.unwrap();
    let running = compute
        .wait_until_running(&instance.id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(running.id, instance.id);
    assert_eq!(running.state, InstanceState::Running);
    compute.terminate(&instance.id).await.unwrap();
    let e = compute
        .wait_until_running(&instance.id, Duration::from_secs(30))
        .await
        .expect_err("a terminated instance never runs");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(!e.is_transient(), "{e}");
}

#[tokio::test]
async fn instances_ion_did_not_launch_are_neither_described_nor_terminated() {
    let what = "ec2 foreign instances";
    let Some(compute) = compute(what, 1000).await else {
        return;
    };
    let endpoint = peer_var(EC2_VAR, what).expect("checked above");
    let raw = raw_ec2(&endpoint).await;
    let out = raw
        .run_instances()
        .image_id(image())
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let foreign = out.instances()[0].instance_id().unwrap().to_owned();
    let all = compute
        .describe(&InstanceFilter {
            include_gone: true,
            ..InstanceFilter::default()
        })
        .await
        .unwrap();
    assert!(all.iter().all(|i| i.id.as_str() != foreign));
    let e = compute
        .terminate(&ion_core::InstanceId::parse(&foreign).unwrap())
        .await
        .expect_err("ion must not terminate what it did not launch");
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    raw.terminate_instances()
        .instance_ids(&foreign)
        .send()
        .await
        .unwrap();
}
