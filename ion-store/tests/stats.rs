//! The stats store against the MongoDB peer: samples in, windowed averages out through the
//! autoscaler's `StatsSource`, one app never sees another's samples, pruning by retention.

mod common;

use std::time::Duration;

use ion_core::control::autoscaler::StatsSource;
use ion_core::{AppId, ErrorKind, TenantId, Timestamp};
use ion_store::{MongoStatsStore, StatsOptions, StatsSample};

fn sample(tenant: &TenantId, app: &str, at: Timestamp, rps: f64, cpu: f64) -> StatsSample {
    StatsSample {
        tenant: tenant.clone(),
        app: AppId::parse(app).unwrap(),
        at,
        requests_per_sec: rps,
        cpu,
        error_rate: 0.01,
        latency_ms: 20.0,
    }
}

#[tokio::test]
async fn windowed_averages_feed_the_autoscaler_per_app() {
    const WHAT: &str = "stats store";
    let Some(conn) = common::connect(WHAT).await else {
        return;
    };
    let store = MongoStatsStore::new(
        conn,
        StatsOptions {
            retention: Duration::from_secs(3600),
            window: Duration::from_secs(60),
        },
    )
    .await
    .unwrap();
    let t = TenantId::parse(&ion_core::testkit::unique_name("stats")).unwrap();
    let other = TenantId::parse(&ion_core::testkit::unique_name("stats")).unwrap();
    let web = AppId::parse("web").unwrap();
    let now = Timestamp::now();

    assert_eq!(
        store.app_stats(&t, &web).await.unwrap(),
        None,
        "no samples yet"
    );

    // Two recent samples of web, one of another app, one of another tenant, one too old.
    store
        .record(&sample(
            &t,
            "web",
            now.minus(Duration::from_secs(10)),
            100.0,
            0.5,
        ))
        .await
        .unwrap();
    store
        .record(&sample(
            &t,
            "web",
            now.minus(Duration::from_secs(20)),
            300.0,
            0.7,
        ))
        .await
        .unwrap();
    store
        .record(&sample(
            &t,
            "api",
            now.minus(Duration::from_secs(5)),
            9_000.0,
            0.9,
        ))
        .await
        .unwrap();
    store
        .record(&sample(
            &other,
            "web",
            now.minus(Duration::from_secs(5)),
            9_000.0,
            0.9,
        ))
        .await
        .unwrap();
    store
        .record(&sample(
            &t,
            "web",
            now.minus(Duration::from_secs(600)),
            9_000.0,
            0.9,
        ))
        .await
        .unwrap();

    let stats = store
        .app_stats(&t, &web)
        .await
        .unwrap()
        .expect("recent samples");
    assert!((stats.requests_per_sec - 200.0).abs() < 1e-9, "{stats:?}");
    assert!((stats.cpu - 0.6).abs() < 1e-9, "{stats:?}");

    let hour = store
        .window(
            &t,
            &web,
            now.minus(Duration::from_secs(3600)),
            now.plus(Duration::from_secs(1)),
        )
        .await
        .unwrap()
        .expect("samples in the hour");
    assert_eq!(hour.samples, 3);
    assert!((hour.latency_ms - 20.0).abs() < 1e-9);

    let bad = sample(&t, "web", now, f64::NAN, 0.1);
    assert_eq!(
        store.record(&bad).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    // Pruning as if an hour and a half had passed removes the old sample and keeps the others
    // of this tenant within the window of that later "now".
    let later = now.plus(Duration::from_secs(3600 - 300));
    store.prune(later).await.unwrap();
    let left = store
        .window(
            &t,
            &web,
            now.minus(Duration::from_secs(7200)),
            now.plus(Duration::from_secs(1)),
        )
        .await
        .unwrap()
        .expect("recent samples survive");
    assert_eq!(
        left.samples, 2,
        "the 10-minute-old sample is past retention at the later now"
    );
    // No global cleanup prune: other runs may share the server; the retention removes these.
    println!("{WHAT}: server ttl index: {}", store.has_ttl_index());
}
