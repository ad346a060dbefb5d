//! The `LogIndex` conformance suite run against `InMemoryLogIndex`, plus its domain faults.

use ion_core::fake::InMemoryLogIndex;
use ion_core::{BulkOutcome, IndexLayout, LogIndex, LogLevel, LogQuery, LogRecord, Timestamp};

ion_core::log_index_conformance!(in_memory, async { Some(InMemoryLogIndex::new()) });

ion_core::log_index_conformance!(in_memory_other_layout, async {
    Some(InMemoryLogIndex::with_layout(
        IndexLayout::new("tenant-logs").unwrap(),
    ))
});

fn record(id: &str, message: &str) -> LogRecord {
    LogRecord {
        id: id.parse().unwrap(),
        tenant: "acme".parse().unwrap(),
        app: "shop".parse().unwrap(),
        instance: None,
        time: Timestamp::parse_rfc3339("2026-11-26T10:00:00Z").unwrap(),
        level: LogLevel::Error,
        message: message.to_owned(),
        fields: Default::default(),
    }
}

#[tokio::test]
async fn retrying_only_the_failed_items_delivers_everything_once() {
    // What the shipper does: send a batch, resend exactly the items that came back retryable.
    let index = InMemoryLogIndex::new();
    index.reject_next_as_retryable(3);
    let batch: Vec<LogRecord> = (0..5)
        .map(|i| record(&format!("r{i}"), "disk full"))
        .collect();
    let mut pending = batch.clone();
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds <= 3, "retries must converge");
        let outcomes = index.bulk(&pending).await.unwrap();
        pending = pending
            .into_iter()
            .zip(outcomes)
            .filter(|(_, o)| matches!(o, BulkOutcome::Retryable { status: 429, .. }))
            .map(|(r, _)| r)
            .collect();
    }
    index.refresh().await.unwrap();
    let page = index
        .search(&"acme".parse().unwrap(), &LogQuery::default())
        .await
        .unwrap();
    assert_eq!(page.records.len(), 5);
    assert_eq!(index.stored_count(), 5);
}

#[tokio::test]
async fn a_mapping_rejection_does_not_block_the_rest_of_the_batch() {
    let index = InMemoryLogIndex::new();
    let field: ion_core::FieldName = "status".parse().unwrap();
    index.reject_field(field.clone());
    let mut bad = record("r1", "bad");
    bad.fields.insert(field, "not a number".to_owned());
    let outcomes = index.bulk(&[bad, record("r2", "good")]).await.unwrap();
    assert!(matches!(
        outcomes[0],
        BulkOutcome::Rejected { status: 400, .. }
    ));
    assert!(!outcomes[0].is_delivered());
    assert_eq!(outcomes[1], BulkOutcome::Created);
}

/// A log index whose search forgets the tenant scope: what the suite exists to catch.
#[derive(Debug, Clone)]
struct LeakyLogIndex {
    inner: InMemoryLogIndex,
    tenants: std::sync::Arc<std::sync::Mutex<Vec<ion_core::TenantId>>>,
}

#[async_trait::async_trait]
impl LogIndex for LeakyLogIndex {
    fn capabilities(&self) -> ion_core::log_index::LogIndexCapabilities {
        self.inner.capabilities()
    }
    fn layout(&self) -> &IndexLayout {
        self.inner.layout()
    }
    async fn ensure_templates(&self, s: &ion_core::IndexSettings) -> ion_core::Result<()> {
        self.inner.ensure_templates(s).await
    }
    async fn bulk(&self, records: &[LogRecord]) -> ion_core::Result<Vec<BulkOutcome>> {
        self.tenants
            .lock()
            .unwrap()
            .extend(records.iter().map(|r| r.tenant.clone()));
        self.inner.bulk(records).await
    }
    async fn refresh(&self) -> ion_core::Result<()> {
        self.inner.refresh().await
    }
    async fn search(
        &self,
        _tenant: &ion_core::TenantId,
        query: &LogQuery,
    ) -> ion_core::Result<ion_core::LogPage> {
        let tenants = self.tenants.lock().unwrap().clone();
        let mut records = Vec::new();
        for t in tenants.iter().collect::<std::collections::BTreeSet<_>>() {
            records.extend(self.inner.search(t, query).await?.records);
        }
        records.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        Ok(ion_core::LogPage {
            records,
            next: None,
        })
    }
    async fn list_indices(&self) -> ion_core::Result<Vec<ion_core::IndexInfo>> {
        self.inner.list_indices().await
    }
    async fn delete_index(&self, name: &ion_core::IndexName) -> ion_core::Result<()> {
        self.inner.delete_index(name).await
    }
}

#[tokio::test]
async fn the_suite_catches_a_search_that_leaks_across_tenants() {
    let leaky = LeakyLogIndex {
        inner: InMemoryLogIndex::new(),
        tenants: Default::default(),
    };
    let case = tokio::spawn(async move {
        ion_core::testkit::log_index::search_returns_only_the_tenants_records(&leaky).await;
    });
    assert!(case.await.unwrap_err().is_panic());
}
