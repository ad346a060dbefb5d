//! The shipper on the fakes: exactly-once delivery across restarts, per-item retry, dead letters
//! with replay, auth pauses that drop nothing, fairness, archiving and rebuild from the archive.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ion_core::fake::{InMemoryBlobStore, InMemoryDocumentStore, InMemoryLogIndex};
use ion_core::log_index::LogIndexCapabilities;
use ion_core::{
    AppId, BulkOutcome, FieldName, IndexInfo, IndexLayout, IndexName, IndexSettings, LogIndex,
    LogLevel, LogPage, LogQuery, LogRecord, RecordId, Result, TenantId, Timestamp,
};
use ion_logs::codec::WalEntry;
use ion_logs::shipper::{list_dead_letters, replay_archive, replay_dead_letters};
use ion_logs::{
    spawn_shipper, Ledger, ShipperConfig, ShipperDeps, ShipperHandle, WalConfig, WriteAheadLog,
};

fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

fn entry(t: &str, i: usize, fields: &[(&str, &str)]) -> WalEntry {
    WalEntry {
        tenant: tenant(t),
        app: AppId::parse("web").unwrap(),
        instance: None,
        time: Timestamp::from_millis(1_764_000_000_000 + i as i64),
        level: LogLevel::Info,
        message: format!("line {i} of {t}"),
        fields: fields
            .iter()
            .map(|(k, v)| (FieldName::parse(k).unwrap(), (*v).to_owned()))
            .collect(),
    }
}

struct Node {
    dir: tempfile::TempDir,
    index: Arc<dyn LogIndex>,
    dlq: InMemoryDocumentStore,
    archive: InMemoryBlobStore,
    ledger: Arc<Ledger>,
    wal: Arc<WriteAheadLog>,
    shipper: Option<ShipperHandle>,
}

fn wal_config(dir: &std::path::Path) -> WalConfig {
    WalConfig {
        dir: dir.to_path_buf(),
        node_name: "n1".into(),
        segment_bytes: 16 << 10,
        commit_interval: Duration::ZERO,
        ..WalConfig::default()
    }
}

fn shipper_config() -> ShipperConfig {
    ShipperConfig {
        batch_docs: 50,
        linger_ms: 1,
        retry_base_ms: 5,
        retry_max_ms: 50,
        auth_pause_ms: 100,
        checkpoint_interval_ms: 10,
        tenant_queue_bytes: 8 << 10,
        ..ShipperConfig::default()
    }
}

impl Node {
    fn start(index: Arc<dyn LogIndex>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut n = Node {
            dir,
            index,
            dlq: InMemoryDocumentStore::new(),
            archive: InMemoryBlobStore::new(),
            ledger: Arc::new(Ledger::new()),
            wal: Arc::new(
                WriteAheadLog::open(&wal_config(tempfile::tempdir().unwrap().path()))
                    .unwrap()
                    .0,
            ),
            shipper: None,
        };
        n.restart();
        n
    }

    /// Stops the shipper and reopens the WAL and a new shipper over the same directory.
    fn restart(&mut self) {
        assert!(self.shipper.is_none());
        let (wal, _, cp) = WriteAheadLog::open(&wal_config(self.dir.path())).unwrap();
        self.wal = Arc::new(wal);
        self.ledger = Arc::new(Ledger::new());
        let deps = ShipperDeps {
            wal: self.wal.clone(),
            index: self.index.clone(),
            dead_letters: Arc::new(self.dlq.clone()),
            archive: Arc::new(self.archive.clone()),
            ledger: self.ledger.clone(),
        };
        self.shipper = Some(spawn_shipper(deps, shipper_config(), cp).unwrap());
    }

    async fn stop(&mut self) {
        self.shipper.take().unwrap().shutdown().await;
        self.wal.close();
    }

    async fn append(&self, entries: &[WalEntry]) {
        let n = entries.len() as u64;
        self.wal
            .append(entries.iter().map(WalEntry::encode).collect())
            .await
            .unwrap();
        self.ledger.durable(&entries[0].tenant, n);
    }

    async fn wait_quiet(&self, what: &str) {
        for _ in 0..1000 {
            if self.ledger.snapshot().values().all(|c| c.in_flight() == 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{what}: still in flight after 10 s: {:?}",
            self.ledger.snapshot()
        );
    }
}

async fn ids(index: &dyn LogIndex, t: &str) -> Vec<RecordId> {
    index.refresh().await.unwrap();
    let mut q = LogQuery {
        limit: 1000,
        ..LogQuery::default()
    };
    let mut out = Vec::new();
    loop {
        let page = index.search(&tenant(t), &q).await.unwrap();
        out.extend(page.records.into_iter().map(|r| r.id));
        match page.next {
            Some(n) => q.after = Some(n),
            None => return out,
        }
    }
}

fn assert_ledger(ledger: &Ledger) {
    for (t, c) in ledger.snapshot() {
        assert_eq!(c.received, c.durable + c.rejected, "{t}: {c:?}");
        assert_eq!(
            c.durable,
            c.indexed + c.dead_lettered + c.in_flight(),
            "{t}: {c:?}"
        );
    }
}

#[tokio::test]
async fn every_record_is_indexed_once_across_restarts() {
    let fake = InMemoryLogIndex::new();
    let mut node = Node::start(Arc::new(fake.clone()));
    for chunk in 0..10 {
        let batch: Vec<WalEntry> = (0..30)
            .map(|i| entry("acme", chunk * 30 + i, &[]))
            .collect();
        node.append(&batch).await;
    }
    node.wait_quiet("first run").await;
    node.stop().await;
    // Records appended after the last checkpoint save but before a stop are re-shipped on
    // restart: deterministic ids make them 409s, never duplicates.
    node.restart();
    let batch: Vec<WalEntry> = (300..350).map(|i| entry("acme", i, &[])).collect();
    node.append(&batch).await;
    node.wait_quiet("second run").await;
    let found = ids(&*node.index, "acme").await;
    let unique: BTreeSet<_> = found.iter().collect();
    assert_eq!(found.len(), 350);
    assert_eq!(unique.len(), 350);
    assert_eq!(fake.stored_count(), 350);
    let c = node.ledger.get(&tenant("acme"));
    assert_eq!((c.durable, c.indexed, c.in_flight()), (350, 350, 0));
    assert_ledger(&node.ledger);
}

#[tokio::test]
async fn transient_item_failures_are_retried_until_delivered() {
    let fake = InMemoryLogIndex::new();
    fake.reject_next_as_retryable(120);
    let node = Node::start(Arc::new(fake.clone()));
    let batch: Vec<WalEntry> = (0..200).map(|i| entry("acme", i, &[])).collect();
    node.append(&batch).await;
    node.wait_quiet("retries").await;
    assert_eq!(fake.stored_count(), 200);
    assert!(fake.bulk_item_count() >= 320, "the 429s were sent again");
    assert_eq!(node.ledger.get(&tenant("acme")).dead_lettered, 0);
}

#[tokio::test]
async fn mapping_rejections_are_dead_lettered_others_flow_and_replay_delivers() {
    let fake = InMemoryLogIndex::new();
    fake.reject_field(FieldName::parse("code").unwrap());
    let node = Node::start(Arc::new(fake.clone()));
    let bad: Vec<WalEntry> = (0..10).map(|i| entry("bad", i, &[("code", "x")])).collect();
    let good: Vec<WalEntry> = (0..100).map(|i| entry("good", i, &[])).collect();
    node.append(&bad).await;
    node.append(&good).await;
    node.wait_quiet("dead letters").await;
    assert_eq!(ids(&*node.index, "good").await.len(), 100);
    let letters = list_dead_letters(&node.dlq, &tenant("bad")).await.unwrap();
    assert_eq!(letters.len(), 10);
    assert_eq!(letters[0].status, 400);
    assert!(!letters[0].reason.is_empty());
    assert_eq!(
        letters[0].record.fields.len(),
        1,
        "the original record is kept"
    );
    let c = node.ledger.get(&tenant("bad"));
    assert_eq!((c.dead_lettered, c.indexed), (10, 0));
    assert_ledger(&node.ledger);

    fake.clear_rejections();
    let report = replay_dead_letters(&node.dlq, &*node.index, &node.ledger, &tenant("bad"))
        .await
        .unwrap();
    assert_eq!((report.records, report.delivered), (10, 10));
    assert!(list_dead_letters(&node.dlq, &tenant("bad"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(ids(&*node.index, "bad").await.len(), 10);
    let c = node.ledger.get(&tenant("bad"));
    assert_eq!((c.dead_lettered, c.indexed), (0, 10));
}

/// Refuses one tenant's records with 403 while `deny` is set; delegates everything else.
#[derive(Debug)]
struct DenyTenant {
    inner: InMemoryLogIndex,
    tenant: TenantId,
    deny: AtomicBool,
}

#[async_trait]
impl LogIndex for DenyTenant {
    fn capabilities(&self) -> LogIndexCapabilities {
        self.inner.capabilities()
    }
    fn layout(&self) -> &IndexLayout {
        self.inner.layout()
    }
    async fn ensure_templates(&self, s: &IndexSettings) -> Result<()> {
        self.inner.ensure_templates(s).await
    }
    async fn bulk(&self, records: &[LogRecord]) -> Result<Vec<BulkOutcome>> {
        let deny = self.deny.load(Ordering::Relaxed);
        let pass: Vec<LogRecord> = records
            .iter()
            .filter(|r| !(deny && r.tenant == self.tenant))
            .cloned()
            .collect();
        let mut outcomes = self.inner.bulk(&pass).await?.into_iter();
        Ok(records
            .iter()
            .map(|r| {
                if deny && r.tenant == self.tenant {
                    BulkOutcome::Rejected {
                        status: 403,
                        reason: "index is read-only".into(),
                    }
                } else {
                    outcomes.next().unwrap()
                }
            })
            .collect())
    }
    async fn refresh(&self) -> Result<()> {
        self.inner.refresh().await
    }
    async fn search(&self, t: &TenantId, q: &LogQuery) -> Result<LogPage> {
        self.inner.search(t, q).await
    }
    async fn list_indices(&self) -> Result<Vec<IndexInfo>> {
        self.inner.list_indices().await
    }
    async fn delete_index(&self, n: &IndexName) -> Result<()> {
        self.inner.delete_index(n).await
    }
}

#[tokio::test]
async fn auth_refusal_pauses_only_that_tenant_and_drops_nothing() {
    let deny = Arc::new(DenyTenant {
        inner: InMemoryLogIndex::new(),
        tenant: tenant("locked"),
        deny: AtomicBool::new(true),
    });
    let node = Node::start(deny.clone());
    // More than the tenant's queue holds, so the reader must skip past it to reach "open".
    let locked: Vec<WalEntry> = (0..400).map(|i| entry("locked", i, &[])).collect();
    let open: Vec<WalEntry> = (0..100).map(|i| entry("open", i, &[])).collect();
    node.append(&locked).await;
    node.append(&open).await;
    for _ in 0..1000 {
        if node.ledger.get(&tenant("open")).indexed == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        node.ledger.get(&tenant("open")).indexed,
        100,
        "the other tenant flows"
    );
    assert!(
        node.ledger.paused().contains_key(&tenant("locked")),
        "the alert is raised"
    );
    let c = node.ledger.get(&tenant("locked"));
    assert_eq!(
        (c.indexed, c.dead_lettered, c.in_flight()),
        (0, 0, 400),
        "nothing dropped"
    );

    deny.deny.store(false, Ordering::Relaxed);
    node.wait_quiet("after the credentials are fixed").await;
    assert_eq!(ids(&*node.index, "locked").await.len(), 400);
    assert!(node.ledger.paused().is_empty());
    assert_ledger(&node.ledger);
}

#[tokio::test]
async fn index_outage_backs_up_in_the_wal_then_drains() {
    let fake = InMemoryLogIndex::new();
    fake.set_unavailable(true);
    let node = Node::start(Arc::new(fake.clone()));
    let batch: Vec<WalEntry> = (0..300).map(|i| entry("acme", i, &[])).collect();
    node.append(&batch).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(node.ledger.get(&tenant("acme")).in_flight(), 300);
    fake.set_unavailable(false);
    node.wait_quiet("after the outage").await;
    assert_eq!(fake.stored_count(), 300);
}

#[tokio::test]
async fn delivered_segments_are_archived_then_deleted_and_the_archive_rebuilds_the_index() {
    let fake = InMemoryLogIndex::new();
    let node = Node::start(Arc::new(fake.clone()));
    for chunk in 0..20 {
        let batch: Vec<WalEntry> = (0..50)
            .map(|i| entry("acme", chunk * 50 + i, &[]))
            .collect();
        node.append(&batch).await;
    }
    node.wait_quiet("archive").await;
    for _ in 0..500 {
        if node.wal.sealed_segments().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        node.wal.sealed_segments().is_empty(),
        "delivered segments leave the disk"
    );
    assert!(!node.archive.is_empty(), "but only into the archive");

    let rebuilt = InMemoryLogIndex::new();
    let report = replay_archive(&node.archive, "wal-archive", &rebuilt)
        .await
        .unwrap();
    assert!(report.delivered > 0);
    // Everything archived is back with the same ids; what is still in the active segment is
    // not archived yet.
    let original: BTreeSet<RecordId> = ids(&fake, "acme").await.into_iter().collect();
    let again: BTreeSet<RecordId> = ids(&rebuilt, "acme").await.into_iter().collect();
    assert!(again.is_subset(&original));
    assert_eq!(again.len() as u64, report.delivered);
    // Replaying onto the original index duplicates nothing.
    replay_archive(&node.archive, "wal-archive", &fake)
        .await
        .unwrap();
    assert_eq!(fake.stored_count(), 1000);
}
