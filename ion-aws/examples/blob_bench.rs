//! Blob benchmark: puts and gets through `S3BlobStore` and through a plain aws-sdk-s3 client
//! doing single-part puts, on the same endpoint, and prints throughput ratios and peak memory.
//!
//! ```text
//! cargo run --release -p ion-aws --example blob_bench -- --endpoint http://127.0.0.1:15000
//! ```
//!
//! Options: `--bucket NAME` (default `ion-blob-bench`), `--large N` (200), `--large-mb M` (8),
//! `--small N` (2000), `--small-kb K` (4), `--huge-mb H` (64: one object through S3BlobStore only,
//! to show memory does not grow with object size), `--concurrency C` (8). With
//! `BLOB_BENCH_RAW_CHECKSUMS=1` the plain client also asks for and validates checksums on gets,
//! as S3BlobStore always does.
//! The last line is `RESULT blobs put_ratio=<r> get_ratio=<r> peak_rss_mb=<n>`, where a ratio is
//! S3BlobStore throughput over the plain client's (≥ 1 means ion is as fast or faster) and
//! `peak_rss_mb` is the process's VmHWM at the end. The two clients run interleaved, in four
//! batches per workload with alternating order, so server drift favours neither.

use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use bytes::{Bytes, BytesMut};
use futures::{stream, StreamExt};
use ion_aws::{AwsConfig, S3BlobStore, S3BlobStoreConfig};
use ion_core::testkit::content::{drain, generated};
use ion_core::{BlobKey, BlobStore, PutOptions};

struct Args {
    endpoint: String,
    bucket: String,
    large: usize,
    large_mb: u64,
    small: usize,
    small_kb: u64,
    huge_mb: u64,
    concurrency: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        endpoint: String::new(),
        bucket: "ion-blob-bench".into(),
        large: 200,
        large_mb: 8,
        small: 2000,
        small_kb: 4,
        huge_mb: 64,
        concurrency: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => a.endpoint = value(),
            "--bucket" => a.bucket = value(),
            "--large" => a.large = value().parse().expect("--large N"),
            "--large-mb" => a.large_mb = value().parse().expect("--large-mb M"),
            "--small" => a.small = value().parse().expect("--small N"),
            "--small-kb" => a.small_kb = value().parse().expect("--small-kb K"),
            "--huge-mb" => a.huge_mb = value().parse().expect("--huge-mb H"),
            "--concurrency" => a.concurrency = value().parse().expect("--concurrency C"),
            other => panic!("unknown option {other}"),
        }
    }
    assert!(!a.endpoint.is_empty(), "--endpoint URL is required");
    a
}

fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// One workload: `count` objects of `size` bytes.
#[derive(Clone, Copy)]
struct Set {
    name: &'static str,
    count: usize,
    size: u64,
}

fn key(run: &str, who: &str, set: &Set, i: usize) -> String {
    format!("bench/{run}/{who}/{}/{i:05}", set.name)
}

async fn ion_put(store: &S3BlobStore, keys: &[(usize, BlobKey)], size: u64, c: usize) -> Duration {
    let t = Instant::now();
    stream::iter(keys)
        .for_each_concurrent(c, |(i, k)| async move {
            let body = generated(*i as u64, size, 64 * 1024);
            store
                .put(k, body, PutOptions::default())
                .await
                .expect("ion put");
        })
        .await;
    t.elapsed()
}

async fn ion_get(store: &S3BlobStore, keys: &[(usize, BlobKey)], size: u64, c: usize) -> Duration {
    let t = Instant::now();
    stream::iter(keys)
        .for_each_concurrent(c, |(_, k)| async move {
            let object = store.get(k).await.expect("ion get");
            let d = drain(object.body).await;
            assert!(d.error.is_none() && d.length == size, "ion get {k}");
        })
        .await;
    let elapsed = t.elapsed();
    stream::iter(keys)
        .for_each_concurrent(
            c,
            |(_, k)| async move { store.delete(k).await.expect("delete") },
        )
        .await;
    elapsed
}

async fn body_bytes(seed: u64, size: u64) -> Bytes {
    let mut s = generated(seed, size, 64 * 1024);
    let mut out = BytesMut::with_capacity(size as usize);
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out.freeze()
}

async fn raw_put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    keys: &[(usize, String)],
    size: u64,
    c: usize,
) -> Duration {
    let t = Instant::now();
    stream::iter(keys)
        .for_each_concurrent(c, |(i, k)| async move {
            let body = body_bytes(*i as u64, size).await;
            s3.put_object()
                .bucket(bucket)
                .key(k)
                .body(aws_sdk_s3::primitives::ByteStream::from(body))
                .send()
                .await
                .expect("raw put");
        })
        .await;
    t.elapsed()
}

async fn raw_get(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    keys: &[(usize, String)],
    size: u64,
    c: usize,
) -> Duration {
    let t = Instant::now();
    stream::iter(keys)
        .for_each_concurrent(c, |(_, k)| async move {
            let mut out = s3
                .get_object()
                .bucket(bucket)
                .key(k)
                .send()
                .await
                .expect("raw get");
            let mut n = 0u64;
            while let Some(chunk) = out.body.next().await {
                n += chunk.expect("raw body").len() as u64;
            }
            assert_eq!(n, size, "raw get {k}");
        })
        .await;
    let elapsed = t.elapsed();
    stream::iter(keys)
        .for_each_concurrent(c, |(_, k)| async move {
            s3.delete_object()
                .bucket(bucket)
                .key(k)
                .send()
                .await
                .expect("delete");
        })
        .await;
    elapsed
}

/// Both clients, interleaved in four batches per set with alternating order, so drift in the
/// server (moto's memory, other load on the machine) does not favour whichever runs first.
async fn both(
    store: &S3BlobStore,
    raw: &aws_sdk_s3::Client,
    bucket: &str,
    run: &str,
    sets: &[Set],
    c: usize,
) -> [Duration; 4] {
    let mut t = [Duration::ZERO; 4];
    for set in sets {
        for batch in 0..4 {
            let range: Vec<usize> = (0..set.count).filter(|i| i % 4 == batch).collect();
            let ion_keys: Vec<(usize, BlobKey)> = range
                .iter()
                .map(|&i| (i, BlobKey::parse(&key(run, "ion", set, i)).unwrap()))
                .collect();
            let raw_keys: Vec<(usize, String)> = range
                .iter()
                .map(|&i| (i, key(run, "raw", set, i)))
                .collect();
            if batch % 2 == 0 {
                t[0] += ion_put(store, &ion_keys, set.size, c).await;
                t[2] += raw_put(raw, bucket, &raw_keys, set.size, c).await;
                t[1] += ion_get(store, &ion_keys, set.size, c).await;
                t[3] += raw_get(raw, bucket, &raw_keys, set.size, c).await;
            } else {
                t[2] += raw_put(raw, bucket, &raw_keys, set.size, c).await;
                t[0] += ion_put(store, &ion_keys, set.size, c).await;
                t[3] += raw_get(raw, bucket, &raw_keys, set.size, c).await;
                t[1] += ion_get(store, &ion_keys, set.size, c).await;
            }
        }
    }
    t
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "testing".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testing".into());
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    let aws = AwsConfig::builder()
        .endpoint_url(&args.endpoint)
        .region(&region)
        .force_path_style(true)
        .static_credentials(&key_id, &secret)
        .build()
        .expect("aws config");
    let store = S3BlobStore::new(&aws, S3BlobStoreConfig::new(&args.bucket))
        .await
        .expect("store");
    store.create_bucket_if_missing().await.expect("bucket");

    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region))
        .endpoint_url(&args.endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            key_id, secret, None, None, "bench",
        ))
        .load()
        .await;
    let raw = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(true)
            .build(),
    );

    let run = format!("{}", std::process::id());
    let sets = [
        Set {
            name: "large",
            count: args.large,
            size: args.large_mb * 1_000_000,
        },
        Set {
            name: "small",
            count: args.small,
            size: args.small_kb * 1_000,
        },
    ];
    let bytes: u64 = sets.iter().map(|s| s.count as u64 * s.size).sum();
    let c = args.concurrency;

    // One large object through S3BlobStore alone first: memory must not grow with its size.
    if args.huge_mb > 0 {
        let huge = args.huge_mb * 1024 * 1024;
        let k = [(
            0usize,
            BlobKey::parse(&format!("bench/{run}/huge")).unwrap(),
        )];
        ion_put(&store, &k, huge, 1).await;
        ion_get(&store, &k, huge, 1).await;
    }
    let huge_rss = peak_rss_mb();
    let [ion_put, ion_get, raw_put, raw_get] =
        both(&store, &raw, &args.bucket, &run, &sets, c).await;
    let total_rss = peak_rss_mb();

    let mbps = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!(
        "workload: {} x {} MB + {} x {} KB, {c} in flight, endpoint {}",
        args.large, args.large_mb, args.small, args.small_kb, args.endpoint
    );
    println!(
        "{:<12} {:>10} {:>10} {:>12} {:>12}",
        "client", "put s", "get s", "put MB/s", "get MB/s"
    );
    for (name, p, g) in [
        ("S3BlobStore", ion_put, ion_get),
        ("aws-sdk-s3", raw_put, raw_get),
    ] {
        println!(
            "{name:<12} {:>10.2} {:>10.2} {:>12.1} {:>12.1}",
            p.as_secs_f64(),
            g.as_secs_f64(),
            mbps(p),
            mbps(g)
        );
    }
    println!("peak rss: {huge_rss} MB after one {} MiB object through S3BlobStore, {total_rss} MB at the end", args.huge_mb);
    println!(
        "RESULT blobs put_ratio={:.2} get_ratio={:.2} peak_rss_mb={total_rss}",
        raw_put.as_secs_f64() / ion_put.as_secs_f64(),
        raw_get.as_secs_f64() / ion_get.as_secs_f64(),
    );
}
