//! Smoke test for the S3 peer (moto server, or a real S3 endpoint): put, get and list.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use ion_core::testkit::{peer_unreachable, peer_var, unique_name};

const VAR: &str = "ION_TEST_S3_ENDPOINT";
const WHAT: &str = "s3 smoke test";

/// A client for the endpoint: path-style addressing (moto serves every bucket on one host),
/// us-east-1, static test credentials unless the environment names others, short timeouts.
async fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let shared = common::aws_config(endpoint).await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[tokio::test]
async fn s3_put_get_list() {
    let Some(endpoint) = peer_var(VAR, WHAT) else {
        return;
    };
    let s3 = client(&endpoint).await;
    let bucket = unique_name("ion-smoke");

    if let Err(err) = s3.create_bucket().bucket(&bucket).send().await {
        peer_unreachable::<()>(VAR, WHAT, &aws_sdk_s3::error::DisplayErrorContext(err));
        return;
    }

    for (key, body) in [
        ("apps/a/1.txt", "first"),
        ("apps/a/2.txt", "second"),
        ("apps/b/1.txt", "other"),
    ] {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(ByteStream::from_static(body.as_bytes()))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{WHAT}: put {key} at {endpoint}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
    }

    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("apps/a/2.txt")
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{WHAT}: get at {endpoint}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    let bytes = got
        .body
        .collect()
        .await
        .expect("read the object body")
        .into_bytes();
    assert_eq!(
        &bytes[..],
        b"second",
        "{WHAT}: the object read back differs from the one written"
    );

    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("apps/a/")
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{WHAT}: list at {endpoint}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        });
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["apps/a/1.txt", "apps/a/2.txt"],
        "{WHAT}: list by prefix"
    );

    let missing = s3
        .get_object()
        .bucket(&bucket)
        .key("apps/none")
        .send()
        .await;
    let err = missing.expect_err("a missing key must be an error");
    assert!(
        err.as_service_error().is_some_and(|e| e.is_no_such_key()),
        "{WHAT}: a missing key should be NoSuchKey, got {}",
        aws_sdk_s3::error::DisplayErrorContext(&err)
    );

    for key in ["apps/a/1.txt", "apps/a/2.txt", "apps/b/1.txt"] {
        s3.delete_object()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect("delete object");
    }
    s3.delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("delete bucket");
}
