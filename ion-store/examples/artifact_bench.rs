//! Benchmark: artifacts through `GridFsArtifactStore` (sha256 + length on the fly, verified
//! download) against the raw `mongodb` GridFS bucket with no hashing, on the same server.
//!
//! Usage: `cargo run --release -p ion-store --example artifact_bench [-- COUNT MEGABYTES]`
//! (default 20 artifacts of 64 MB). The server comes from `ION_MONGO_URL` (all `ION_MONGO_*`
//! settings apply) or, when unset, `ION_TEST_MONGO_URL`. Each round uploads and downloads one
//! artifact both ways, alternating which goes first, and deletes both, so disk use stays at one
//! artifact per path. The last line is
//! `RESULT artifacts upload_ratio=<r> download_ratio=<r> peak_rss_mb=<n>`, where a ratio is ion's
//! throughput over the raw bucket's (1.0 = no cost) and peak_rss_mb is the process's VmHWM.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use ion_core::fake::SeededRng;
use ion_core::{AppId, ArtifactMeta, ArtifactStore, ByteStream, TenantId, Version};
use ion_store::{GridFsArtifactStore, GridFsOptions, MongoConfig, MongoConnection};
use mongodb::bson::doc;
use mongodb::options::GridFsBucketOptions;

const MIB: usize = 1024 * 1024;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` value 5), so each pass's peak is its own.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `total` bytes as 1 MiB pieces sliced from one random buffer (no copy, no growth).
fn body(source: &Bytes, total: usize) -> ByteStream {
    let source = source.clone();
    futures::stream::iter((0..total).step_by(MIB))
        .map(move |at| Ok(source.slice(0..MIB.min(total - at))))
        .boxed()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().map(|a| a.parse().expect("COUNT")).unwrap_or(20);
    let mb: usize = args
        .next()
        .map(|a| a.parse().expect("MEGABYTES"))
        .unwrap_or(64);
    let size = mb * MIB;

    let config = match MongoConfig::from_env() {
        Ok(c) => c,
        Err(_) => {
            let url = std::env::var("ION_TEST_MONGO_URL")
                .expect("set ION_MONGO_URL or ION_TEST_MONGO_URL (eval \"$(scripts/peers env)\")");
            MongoConfig::builder()
                .url(url)
                .database("ion_bench")
                .operation_timeout(Duration::from_secs(600))
                .build()
                .expect("config")
        }
    };
    let conn = MongoConnection::connect(&config).await.expect("connect");
    let store = GridFsArtifactStore::new(
        conn.clone(),
        GridFsOptions {
            bucket: "bench_ion".into(),
            ..GridFsOptions::default()
        },
    )
    .await
    .expect("store");
    let raw_client = mongodb::Client::with_uri_str(&config.url)
        .await
        .expect("raw client");
    let raw = raw_client.database(&config.database).gridfs_bucket(
        GridFsBucketOptions::builder()
            .bucket_name("bench_raw".to_owned())
            .chunk_size_bytes(255 * 1024)
            .build(),
    );

    let mut rng = SeededRng::new(42);
    let mut buf = Vec::with_capacity(MIB);
    while buf.len() < MIB {
        buf.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    let source = Bytes::from(buf);
    let meta = ArtifactMeta {
        tenant: TenantId::parse("bench").unwrap(),
        app: AppId::parse("app").unwrap(),
        version: Version(1),
    };
    let baseline_kb = status_kb("VmRSS:");
    let (mut ion_up, mut ion_down, mut raw_up, mut raw_down) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let (mut ion_peak_kb, mut raw_peak_kb) = (0u64, 0u64);

    for round in 0..count {
        let raw_first = round % 2 == 0;
        for pass in 0..2 {
            reset_peak();
            if (pass == 0) == raw_first {
                // Raw bucket: write 1 MiB pieces, read into a 256 KiB buffer, no hashing.
                let t = Instant::now();
                let mut up = raw
                    .open_upload_stream(format!("raw-{round}"))
                    .await
                    .unwrap();
                for at in (0..size).step_by(MIB) {
                    up.write_all(&source[..MIB.min(size - at)]).await.unwrap();
                }
                up.close().await.unwrap();
                raw_up += t.elapsed();
                let id = up.id().clone();
                let t = Instant::now();
                let mut down = raw.open_download_stream(id.clone()).await.unwrap();
                let mut read_buf = vec![0u8; 256 * 1024];
                let mut n = 0;
                loop {
                    let got = down.read(&mut read_buf).await.unwrap();
                    if got == 0 {
                        break;
                    }
                    n += got;
                }
                raw_down += t.elapsed();
                assert_eq!(n, size, "raw download length");
                raw.delete(id).await.unwrap();
                raw_peak_kb = raw_peak_kb.max(status_kb("VmHWM:"));
            } else {
                let t = Instant::now();
                let reference = store.upload(&meta, body(&source, size)).await.unwrap();
                ion_up += t.elapsed();
                let t = Instant::now();
                let mut down = store.download(&reference).await.unwrap();
                let mut n = 0;
                while let Some(piece) = down.next().await {
                    n += piece.expect("verified download").len();
                }
                ion_down += t.elapsed();
                assert_eq!(n, size, "ion download length");
                store.delete(&reference.id).await.unwrap();
                ion_peak_kb = ion_peak_kb.max(status_kb("VmHWM:"));
            }
        }
        eprintln!("round {}/{count} done", round + 1);
    }
    let _ = raw_client
        .database(&config.database)
        .run_command(doc! { "ping": 1 })
        .await;

    let total_mb = (count * mb) as f64;
    let rate = |d: Duration| total_mb / d.as_secs_f64();
    // The process peak: the larger of the two paths' peaks (VmHWM was reset before each pass).
    let peak_kb = ion_peak_kb.max(raw_peak_kb);
    println!(
        "artifact_bench: {count} x {mb} MB, chunk 255 KiB, server {}",
        conn_desc(&config)
    );
    println!("path        upload MB/s  download MB/s");
    println!(
        "raw bucket  {:>11.1}  {:>13.1}",
        rate(raw_up),
        rate(raw_down)
    );
    println!(
        "ion store   {:>11.1}  {:>13.1}",
        rate(ion_up),
        rate(ion_down)
    );
    println!(
        "rss: baseline {} MB; peak during ion passes {} MB ({} MB above baseline); peak during raw passes {} MB ({} MB above baseline)",
        baseline_kb / 1024,
        ion_peak_kb / 1024,
        ion_peak_kb.saturating_sub(baseline_kb) / 1024,
        raw_peak_kb / 1024,
        raw_peak_kb.saturating_sub(baseline_kb) / 1024,
    );
    println!(
        "RESULT artifacts upload_ratio={:.3} download_ratio={:.3} peak_rss_mb={}",
        rate(ion_up) / rate(raw_up),
        rate(ion_down) / rate(raw_down),
        peak_kb / 1024
    );
}

fn conn_desc(config: &MongoConfig) -> String {
    format!("{:?}", config)
        .split("url: \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("?")
        .to_owned()
}
