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
