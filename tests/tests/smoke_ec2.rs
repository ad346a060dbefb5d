//! Smoke test for the EC2 peer (moto server, or a real EC2 endpoint): run, describe by tag, terminate.

mod common;

use aws_sdk_ec2::error::DisplayErrorContext;
use aws_sdk_ec2::types::{
    Filter, InstanceStateName, InstanceType, ResourceType, Tag, TagSpecification,
};
use ion_core::testkit::{peer_unreachable, peer_var, unique_name};

const VAR: &str = "ION_TEST_EC2_ENDPOINT";
const WHAT: &str = "ec2 smoke test";
/// moto's EC2 backend ships this Amazon Linux image id among its default AMIs.
const FALLBACK_AMI: &str = "ami-12c6146b";

async fn client(endpoint: &str) -> aws_sdk_ec2::Client {
    let shared = common::aws_config(endpoint).await;
    aws_sdk_ec2::Client::new(&shared)
}

async fn instances_tagged(
    ec2: &aws_sdk_ec2::Client,
    run: &str,
) -> Vec<(String, InstanceStateName)> {
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:ion:smoke-run")
                .values(run)
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{WHAT}: describe_instances: {}", DisplayErrorContext(e)));
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let state = i
                .state()
                .and_then(|s| s.name())
                .cloned()
                .unwrap_or(InstanceStateName::Pending);
            (i.instance_id().unwrap_or_default().to_owned(), state)
        })
        .collect()
}

#[tokio::test]
async fn ec2_run_describe_terminate_with_tags() {
    let Some(endpoint) = peer_var(VAR, WHAT) else {
        return;
    };
    let ec2 = client(&endpoint).await;

    let zones = match ec2.describe_availability_zones().send().await {
        Ok(z) => z,
        Err(err) => {
            peer_unreachable::<()>(VAR, WHAT, &DisplayErrorContext(err));
            return;
        }
    };
    let zone = zones
        .availability_zones()
        .first()
        .and_then(|z| z.zone_name())
        .expect("at least one zone")
        .to_owned();

    // Against a real account, name the image with ION_TEST_EC2_AMI; moto lists its defaults.
    let ami = match std::env::var("ION_TEST_EC2_AMI") {
        Ok(ami) if !ami.is_empty() => ami,
        _ => {
            let images = ec2
                .describe_images()
                .owners("amazon")
                .send()
                .await
                .expect("describe_images");
            images
                .images()
                .first()
                .and_then(|i| i.image_id())
                .unwrap_or(FALLBACK_AMI)
                .to_owned()
        }
    };

    let run = unique_name("ion-smoke");
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::Instance)
        .tags(Tag::builder().key("ion:smoke-run").value(&run).build())
        .tags(Tag::builder().key("ion:app").value("smoke").build())
        .build();
    let launch = || {
        ec2.run_instances()
            .image_id(&ami)
            .instance_type(InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .placement(
                aws_sdk_ec2::types::Placement::builder()
                    .availability_zone(&zone)
                    .build(),
            )
            .tag_specifications(tags.clone())
            .client_token(format!("{run}-token"))
    };
    let first = launch()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{WHAT}: run_instances: {}", DisplayErrorContext(e)));
    let id = first
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .expect("an instance id")
        .to_owned();

    // The Compute contract needs a retried launch (same idempotency key) to make no second
    // instance; record whether this peer honours ClientToken.
    let retried = launch()
        .send()
        .await
        .unwrap_or_else(|e| panic!("{WHAT}: retried run_instances: {}", DisplayErrorContext(e)));
    let retried_id = retried
        .instances()
        .first()
        .and_then(|i| i.instance_id())
        .unwrap_or_default()
        .to_owned();
    if retried_id != id {
        println!("peer gap: {endpoint} ignores ClientToken on RunInstances (retry made {retried_id} beside {id})");
    }

    let found = instances_tagged(&ec2, &run).await;
    assert!(
        found.iter().any(|(i, _)| *i == id),
        "{WHAT}: describe by tag did not find {id}: {found:?}"
    );
    let described = ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .expect("describe by id");
    let instance = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .expect("the instance");
    assert_eq!(
        instance.placement().and_then(|p| p.availability_zone()),
        Some(zone.as_str()),
        "{WHAT}: zone"
    );
    assert!(
        instance
            .tags()
            .iter()
            .any(|t| t.key() == Some("ion:app") && t.value() == Some("smoke")),
        "{WHAT}: tags not returned: {:?}",
        instance.tags()
    );

    let ids: Vec<String> = found.iter().map(|(i, _)| i.clone()).collect();
    ec2.terminate_instances()
        .set_instance_ids(Some(ids.clone()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{WHAT}: terminate_instances: {}", DisplayErrorContext(e)));
    // Terminating again is how the Compute contract's idempotent terminate maps onto EC2.
    ec2.terminate_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .expect("second terminate is accepted");

    for (i, state) in instances_tagged(&ec2, &run).await {
        assert!(
            matches!(
                state,
                InstanceStateName::Terminated | InstanceStateName::ShuttingDown
            ),
            "{WHAT}: {i} is {state:?} after terminate"
        );
    }
}
