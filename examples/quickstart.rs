//! quickstart: the platform's backends on the embedded in-memory default, no external service.
//!
//! Walks through each backend trait doing real work and prints a narrative:
//! store and verify an artifact, keep app documents with a revision conflict, launch instances in
//! two zones, apply a route table, index and search logs for two tenants showing isolation.
//! Then the control plane runs on the same embedded default as a timeline: two tenants deploy,
//! ready instances enter the route table, a crash is healed, a zone is lost and returns, a
//! rolling upgrade completes and a bad one rolls back, logs are searched per tenant, and a
//! snapshot is taken, restored and verified.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ion_core::control::{
    Clock, FakeProbe, Platform, ProbeResult, RolloutState, RouteSync, TickReport,
};
use ion_core::fake::{
    InMemoryArtifactStore, InMemoryBlobStore, InMemoryCompute, InMemoryDocumentStore,
    InMemoryLoadBalancer, InMemoryLogIndex,
};
use ion_core::snapshot::{RestoreTargets, SnapshotScheduler, SnapshotSources};
use ion_core::{
    AppId, AppSpec, ArtifactMeta, ArtifactRef, ArtifactStore, ArtifactStoreExt, Backend, BlobStore,
    CollectionName, Compute, DocumentId, DocumentStore, DocumentStoreExt, ErrorKind, Hostname,
    HttpPath, IdempotencyKey, InstanceFilter, LaunchRequest, LoadBalancer, LogIndex, LogLevel,
    LogQuery, LogRecord, RecordId, Route, RouteTable, TenantId, Timestamp, Version, Zone,
};
use serde_json::json;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn step(title: &str) {
    println!("\n== {title}");
}

#[tokio::main]
async fn main() -> Result<()> {
    println!("ion quickstart: every backend is the embedded in-memory default");

    // One `Arc<dyn …>` per trait: swap any of them for Ec2Compute, MongoDocumentStore,
    // GridFsArtifactStore, ElasticsearchLogIndex or NginxLoadBalancer without touching the rest.
    let zones = vec![Zone::parse("zone-a")?, Zone::parse("zone-b")?];
    let compute: Arc<dyn Compute> = Arc::new(InMemoryCompute::new(zones.clone()));
    let documents: Arc<dyn DocumentStore> = Arc::new(InMemoryDocumentStore::new());
    let artifacts = InMemoryArtifactStore::new();
    let artifact_store: Arc<dyn ArtifactStore> = Arc::new(artifacts.clone());
    let logs: Arc<dyn LogIndex> = Arc::new(InMemoryLogIndex::new());
    let lb: Arc<dyn LoadBalancer> = Arc::new(InMemoryLoadBalancer::new());

    let acme = TenantId::parse("acme")?;
    let globex = TenantId::parse("globex")?;
    let billing = AppId::parse("billing")?;

    step("tenant input is parsed at the boundary");
    for hostile in ["acme; rm -rf /", "Acme", "../etc", "a\nserver {"] {
        let err = TenantId::parse(hostile).expect_err("hostile names never parse");
        println!("refused {hostile:?}: {err}");
    }

    step("artifact store: upload, verify, detect corruption");
    let meta = ArtifactMeta {
        tenant: acme.clone(),
        app: billing.clone(),
        version: Version(1),
    };
    let binary = Bytes::from(vec![0x7f; 256 * 1024]);
    let artifact = artifact_store.upload_bytes(&meta, binary.clone()).await?;
    println!(
        "uploaded {} ({} bytes, sha256 {})",
        artifact.id, artifact.length, artifact.sha256
    );
    let back = artifact_store.download_bytes(&artifact, 1 << 20).await?;
    assert_eq!(back, binary);
    println!("downloaded and verified {} bytes", back.len());
    let spare = artifact_store
        .upload_bytes(&meta, Bytes::from_static(b"spare"))
        .await?;
    artifacts.corrupt(&spare.id);
    let err = artifact_store
        .download_bytes(&spare, 1 << 20)
        .await
        .expect_err("a corrupted artifact never downloads cleanly");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    println!("a flipped byte in storage is caught at download: {err}");

    step("document store: app metadata with optimistic concurrency");
    let apps = CollectionName::parse("apps")?;
    let id = DocumentId::parse("acme.billing")?;
    let rev1 = documents
        .insert_json(
            &apps,
            &id,
            &json!({"tenant": "acme", "app": "billing", "replicas": 2}),
        )
        .await?;
    println!("inserted {id} at {rev1}");
    let (doc, rev) = documents.get_json::<serde_json::Value>(&apps, &id).await?;
    let mut scaled = doc.clone();
    scaled["replicas"] = json!(3);
    let body = ion_core::DocumentBody::new(scaled)?;
    let rev2 = documents.update(&apps, &id, rev, &body).await?;
    println!("scaled to 3 replicas: {rev} -> {rev2}");
    let stale = documents.update(&apps, &id, rev1, &body).await;
    let err = stale.expect_err("a stale writer must lose");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    println!("a writer still holding {rev1} is refused: {err}");

    step("compute: launch instances in two zones, idempotently");
    let mut backends = Vec::new();
    for (slot, zone) in zones.iter().enumerate() {
        let request = LaunchRequest {
            idempotency_key: IdempotencyKey::parse(&format!("acme-billing-v1-{slot}"))?,
            zone: zone.clone(),
            tenant: acme.clone(),
            app: billing.clone(),
            version: Version(1),
            artifact: artifact.clone(),
            port: 8080,
        };
        let first = compute.launch(request.clone()).await?;
        let retry = compute.launch(request).await?;
        assert_eq!(first.id, retry.id);
        println!(
            "launched {} in {} at {:?} (a retried launch returned the same instance)",
            first.id, first.zone, first.address
        );
        if let Some(addr) = first.address {
            backends.push(Backend {
                instance: first.id.clone(),
                addr,
                zone: first.zone.clone(),
            });
        }
    }
    let running = compute
        .describe(&InstanceFilter {
            tenant: Some(acme.clone()),
            app: Some(billing.clone()),
            include_gone: false,
        })
        .await?;
    println!("describe finds {} instances of acme/billing", running.len());
    assert_eq!(running.len(), 2);

    step("load balancer: apply a whole route table");
    let table = RouteTable::new(
        1,
        vec![Route {
            tenant: acme.clone(),
            app: billing.clone(),
            hostnames: vec![Hostname::parse("billing.acme.example.com")?],
            backends,
            tls: None,
        }],
    )?;
    let live = lb.apply(&table).await?;
    println!(
        "generation {} is live (checksum {})",
        live.generation, live.checksum
    );
    let clash = RouteTable::new(
        2,
        vec![
            Route {
                tenant: acme.clone(),
                app: billing.clone(),
                hostnames: vec![Hostname::parse("shop.example.com")?],
                backends: vec![],
                tls: None,
            },
            Route {
                tenant: globex.clone(),
                app: billing.clone(),
                hostnames: vec![Hostname::parse("shop.example.com")?],
                backends: vec![],
                tls: None,
            },
        ],
    );
    println!(
        "a table where two tenants claim one hostname is refused: {}",
        clash.expect_err("hostname takeover is refused")
    );

    step("log index: two tenants, one index, isolated search");
    let now = Timestamp::parse_rfc3339("2026-11-26T12:00:00Z").ok_or("bad time")?;
    let mut records = Vec::new();
    for (i, (tenant, message)) in [
        (&acme, "payment accepted for order 17"),
        (&acme, "payment declined: card expired"),
        (&globex, "payment accepted for order 99"),
    ]
    .into_iter()
    .enumerate()
    {
        records.push(LogRecord {
            id: RecordId::parse(&format!("quickstart-{i}"))?,
            tenant: tenant.clone(),
            app: billing.clone(),
            instance: None,
            time: now.plus(std::time::Duration::from_secs(i as u64)),
            level: if message.contains("declined") {
                LogLevel::Warn
            } else {
                LogLevel::Info
            },
            message: message.to_owned(),
            fields: BTreeMap::new(),
        });
    }
    let outcomes = logs.bulk(&records).await?;
    println!("bulk outcomes: {outcomes:?}");
    let again = logs.bulk(&records[..1]).await?;
    println!(
        "re-sending a record is reported as {:?}, never duplicated",
        again[0]
    );
    logs.refresh().await?;
    let query = LogQuery {
        text: Some("payment accepted".into()),
        ..LogQuery::default()
    };
    for tenant in [&acme, &globex] {
        let page = logs.search(tenant, &query).await?;
        for record in &page.records {
            assert_eq!(&record.tenant, tenant);
            println!("{tenant} sees: {} {}", record.level, record.message);
        }
    }
    let sneaky = LogQuery {
        text: Some("tenant:globex OR *".into()),
        ..LogQuery::default()
    };
    let page = logs.search(&acme, &sneaky).await?;
    assert!(page.records.iter().all(|r| r.tenant == acme));
    println!(
        "query text is plain words, never query syntax: acme's 'tenant:globex OR *' finds {} records",
        page.records.len()
    );

    control_plane_timeline().await?;

    println!("\nquickstart complete");
    Ok(())
}

/// Simulated time for the control-plane timeline: each pass moves it on, no real waiting.
#[derive(Debug, Default)]
struct DemoClock(AtomicI64);

impl Clock for DemoClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::Relaxed))
    }
}

struct Timeline {
    platform: Platform,
    clock: Arc<DemoClock>,
    compute: InMemoryCompute,
    lb: InMemoryLoadBalancer,
}

impl Timeline {
    /// One control-plane pass, then 30 simulated seconds; prints what the pass did.
    async fn pass(&self) -> Result<TickReport> {
        self.compute.set_now(self.clock.now());
        let report = self.platform.tick().await?;
        let t = self.clock.now();
        for l in &report.plan.launches {
            println!(
                "  [{t}] launch {}/{} {} slot {} in {} ({:?})",
                l.tenant, l.app, l.version, l.slot, l.zone, l.reason
            );
        }
        for x in &report.plan.terminations {
            println!(
                "  [{t}] stop {} of {}/{} {} ({:?})",
                x.instance, x.tenant, x.app, x.version, x.reason
            );
        }
        for c in &report.plan.crashes {
            println!(
                "  [{t}] crash seen: {} of {}/{} (slot crash #{})",
                c.instance, c.tenant, c.app, c.crashes
            );
        }
        if let Some(Ok(RouteSync::Applied { generation, .. })) = &report.routes {
            println!("  [{t}] route table generation {generation} is live");
        }
        for (tenant, app, state) in &report.rollouts {
            println!("  [{t}] rollout of {tenant}/{app}: {state:?}");
        }
        self.clock.0.fetch_add(30_000, Ordering::Relaxed);
        Ok(report)
    }

    async fn passes(&self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.pass().await?;
        }
        Ok(())
    }

    fn backends(&self, host: &str) -> Result<Vec<Backend>> {
        Ok(self
            .lb
            .backends_for(&Hostname::parse(host)?)
            .unwrap_or_default())
    }

    async fn zones_of(&self, app: &str) -> Result<Vec<String>> {
        let mut z: Vec<String> = self
            .compute
            .describe(&InstanceFilter::default())
            .await?
            .into_iter()
            .filter(|i| i.app.as_str() == app)
            .map(|i| i.zone.to_string())
            .collect();
        z.sort();
        Ok(z)
    }
}

/// The control plane as a timeline: tenants deploy, crashes heal, a zone fails and returns, a
/// rolling upgrade completes, a bad one rolls back, logs are searched, a snapshot round-trips.
async fn control_plane_timeline() -> Result<()> {
    step("control plane: the Platform on the embedded default");
    let zones = vec![
        Zone::parse("zone-a")?,
        Zone::parse("zone-b")?,
        Zone::parse("zone-c")?,
    ];
    let compute = InMemoryCompute::new(zones.clone());
    let lb = InMemoryLoadBalancer::new();
    let documents: Arc<dyn DocumentStore> = Arc::new(InMemoryDocumentStore::new());
    let artifacts: Arc<dyn ArtifactStore> = Arc::new(InMemoryArtifactStore::new());
    let logs: Arc<dyn LogIndex> = Arc::new(InMemoryLogIndex::new());
    let blobs: Arc<dyn BlobStore> = Arc::new(InMemoryBlobStore::new());
    let probe = FakeProbe::new();
    let clock = Arc::new(DemoClock(AtomicI64::new(
        Timestamp::parse_rfc3339("2026-11-26T13:00:00Z")
            .ok_or("bad time")?
            .as_millis(),
    )));
    let platform = Platform::builder()
        .compute(Arc::new(compute.clone()))
        .documents(documents.clone())
        .blobs(blobs.clone())
        .artifacts(artifacts.clone())
        .logs(logs.clone())
        .lb(Arc::new(lb.clone()))
        .probe(Arc::new(probe.clone()))
        .clock(clock.clone())
        .build()?;
    let tl = Timeline {
        platform: platform.clone(),
        clock,
        compute: compute.clone(),
        lb: lb.clone(),
    };

    let acme = TenantId::parse("acme")?;
    let globex = TenantId::parse("globex")?;
    let (web, shop) = (AppId::parse("web")?, AppId::parse("shop")?);
    let app_spec = |tenant: &TenantId,
                    app: &AppId,
                    version: u64,
                    artifact: ArtifactRef,
                    replicas: u32,
                    host: &str|
     -> Result<AppSpec> {
        Ok(AppSpec {
            tenant: tenant.clone(),
            app: app.clone(),
            version: Version(version),
            artifact,
            replicas,
            hostnames: vec![Hostname::parse(host)?],
            port: 8080,
            readiness_path: HttpPath::parse("/healthz")?,
            max_surge: 1,
            max_unavailable: 0,
        })
    };
    let upload = |tenant: &TenantId, app: &AppId, version: u64| {
        let artifacts = artifacts.clone();
        let meta = ArtifactMeta {
            tenant: tenant.clone(),
            app: app.clone(),
            version: Version(version),
        };
        async move {
            artifacts
                .upload_bytes(&meta, Bytes::from(format!("{}-v{version}", meta.app)))
                .await
        }
    };
    platform.set_quota(&acme, 8).await;

    step("two tenants deploy; instances spread over zones and become routable when ready");
    platform
        .deploy(app_spec(
            &acme,
            &web,
            1,
            upload(&acme, &web, 1).await?,
            3,
            "web.acme.example",
        )?)
        .await?;
    platform
        .deploy(app_spec(
            &globex,
            &shop,
            1,
            upload(&globex, &shop, 1).await?,
            2,
            "shop.globex.example",
        )?)
        .await?;
    tl.passes(4).await?;
    println!(
        "acme/web runs in {:?}; web.acme.example routes to {} ready instances",
        tl.zones_of("web").await?,
        tl.backends("web.acme.example")?.len()
    );
    println!(
        "globex/shop routes to {} instances",
        tl.backends("shop.globex.example")?.len()
    );
    let too_big = app_spec(
        &acme,
        &AppId::parse("batch")?,
        1,
        upload(&acme, &web, 1).await?,
        4,
        "batch.acme.example",
    )?;
    println!(
        "acme's quota of 8 holds web (3 + 1 surge); a 4-replica app is refused up front: {}",
        platform.deploy(too_big).await.expect_err("over quota")
    );

    step("an instance crashes and is relaunched at once (Diego's first restarts are immediate)");
    let victim = tl.backends("web.acme.example")?[0].instance.clone();
    compute.crash(&victim)?;
    println!("crashed {victim}");
    tl.passes(2).await?;
    println!(
        "web.acme.example routes to {} instances, {victim} is gone from the table",
        tl.backends("web.acme.example")?.len()
    );

    step("zone-c goes down: its instances are lost and capacity moves to zone-a and zone-b");
    compute.zone_down(&zones[2])?;
    tl.passes(3).await?;
    println!("acme/web now in {:?}", tl.zones_of("web").await?);
    compute.zone_up(&zones[2])?;
    println!(
        "zone-c is back: the rebalancer surges into it first, then retires from the fullest zone"
    );
    tl.passes(4).await?;
    println!("acme/web now in {:?}", tl.zones_of("web").await?);

    step("rolling upgrade of acme/web to v2: surge one, retire old only when new is ready");
    platform
        .deploy(app_spec(
            &acme,
            &web,
            2,
            upload(&acme, &web, 2).await?,
            3,
            "web.acme.example",
        )?)
        .await?;
    for _ in 0..8 {
        tl.pass().await?;
        let ready = tl.backends("web.acme.example")?.len();
        assert!(ready >= 3, "zero downtime: never fewer than 3 routable");
    }
    println!(
        "rollout state: {:?}",
        platform.rollout(&acme, &web).await.map(|r| r.state)
    );

    step(
        "a bad v3 never answers its probe: liveness failures count as crashes, then it rolls back",
    );
    probe.set_version(&web, 3, ProbeResult::Unreachable);
    platform
        .deploy(app_spec(
            &acme,
            &web,
            3,
            upload(&acme, &web, 3).await?,
            3,
            "web.acme.example",
        )?)
        .await?;
    for _ in 0..40 {
        tl.pass().await?;
        let serving = tl.backends("web.acme.example")?.len();
        assert!(serving >= 3, "v2 keeps serving while v3 fails");
        if platform
            .rollout(&acme, &web)
            .await
            .is_some_and(|r| r.state != RolloutState::Progressing)
        {
            break;
        }
    }
    tl.passes(3).await?;
    let desired = platform.desired().await;
    let web_desired = desired
        .iter()
        .find(|d| d.spec.app == web)
        .ok_or("web is desired")?;
    println!(
        "acme/web desired version is back to {}; routes to {} instances the whole time",
        web_desired.spec.version,
        tl.backends("web.acme.example")?.len()
    );

    step("logs searched per tenant through the platform");
    let now = tl.clock.now();
    let records: Vec<LogRecord> = [
        (&acme, &web, "GET /cart 200"),
        (&acme, &web, "GET /cart 500 upstream timeout"),
        (&globex, &shop, "GET /cart 200"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (tenant, app, message))| -> Result<LogRecord> {
        Ok(LogRecord {
            id: RecordId::parse(&format!("timeline-{i}"))?,
            tenant: tenant.clone(),
            app: app.clone(),
            instance: None,
            time: now.plus(std::time::Duration::from_secs(i as u64)),
            level: if message.contains("500") {
                LogLevel::Error
            } else {
                LogLevel::Info
            },
            message: message.to_owned(),
            fields: BTreeMap::new(),
        })
    })
    .collect::<Result<_>>()?;
    logs.bulk(&records).await?;
    logs.refresh().await?;
    for tenant in [&acme, &globex] {
        let page = platform
            .search_logs(
                tenant,
                &LogQuery {
                    text: Some("cart".into()),
                    ..LogQuery::default()
                },
            )
            .await?;
        println!(
            "{tenant} searches 'cart': {:?}",
            page.records
                .iter()
                .map(|r| r.message.as_str())
                .collect::<Vec<_>>()
        );
    }

    step("snapshot platform data, artifacts and logs; restore into empty stores");
    platform.audit().flush().await?;
    let scheduler = SnapshotScheduler::new(
        blobs.clone(),
        SnapshotSources {
            documents: Some((
                documents.clone(),
                vec![
                    CollectionName::parse("apps")?,
                    CollectionName::parse("audit_events")?,
                ],
            )),
            artifacts: Some((artifacts.clone(), vec![acme.clone(), globex.clone()])),
            logs: Some((logs.clone(), vec![acme.clone(), globex.clone()])),
        },
    );
    let manifest = scheduler.snapshot(tl.clock.now()).await?;
    println!(
        "snapshot {}: {} objects, {} bytes, each with its sha256",
        manifest.id,
        manifest.objects.len(),
        manifest.total_bytes()
    );
    let fresh_docs: Arc<dyn DocumentStore> = Arc::new(InMemoryDocumentStore::new());
    let restored = scheduler
        .restore(
            &manifest.id,
            &RestoreTargets {
                documents: Some(fresh_docs.clone()),
                artifacts: Some(Arc::new(InMemoryArtifactStore::new())),
                logs: Some(Arc::new(InMemoryLogIndex::new())),
            },
        )
        .await?;
    println!(
        "restored {} documents, {} artifacts, {} log records into empty stores",
        restored.documents, restored.artifacts, restored.log_records
    );
    let verified = scheduler.verify(&manifest.id).await?;
    println!(
        "verify drill: {} objects, {} bytes matched the manifest",
        verified.objects, verified.bytes
    );

    step("a failover control plane reads the restored desired state, starts but stops nothing until re-asserted");
    let failover = Platform::builder()
        .compute(Arc::new(compute.clone()))
        .documents(fresh_docs)
        .blobs(blobs)
        .artifacts(artifacts)
        .logs(logs)
        .lb(Arc::new(lb.clone()))
        .probe(Arc::new(probe))
        .clock(tl.clock.clone())
        .build()?;
    let recovered = failover.recover().await?;
    println!(
        "recovered {recovered} desired apps; stops allowed before re-assertion: {}",
        failover.is_fresh().await
    );
    failover.reassert_desired().await;
    let report = failover.tick().await?;
    println!(
        "first failover pass: {} launches, {} stops — the platform was already converged",
        report.launched, report.terminated
    );

    let events = platform.audit().read_all().await?;
    println!(
        "audit log: {} events, every launch, stop, crash, route table and decision with its reason",
        events.len()
    );
    Ok(())
}
