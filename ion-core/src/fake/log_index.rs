//! `InMemoryLogIndex`: the in-memory fake of the `LogIndex` trait, with Elasticsearch semantics.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::fake::FaultPlan;
use crate::log_index::{
    BulkOutcome, IndexInfo, IndexLayout, IndexSettings, LogIndex, LogIndexCapabilities, LogPage,
    LogQuery, SearchCursor, SearchFlavour,
};
use crate::model::LogRecord;
use crate::name::{FieldName, IndexName, RecordId, TenantId};

/// A rule that refuses records as an index mapping would: returns the reason for a record it
/// refuses, `None` for one it accepts.
pub type MappingRule = Arc<dyn Fn(&LogRecord) -> Option<String> + Send + Sync>;

/// An in-memory [`LogIndex`] that does the real work: daily indices from the layout, per-item
/// bulk outcomes, whole-word search scoped to one tenant, time and field filters, newest-first
/// cursor paging.
///
/// Behaves like Elasticsearch where the contract can observe it:
/// - **Near real time**: records written since the last [`refresh`](LogIndex::refresh) are
///   stored (a repeated id is already `AlreadyExists`) but invisible to `search` and not counted
///   by `list_indices`, exactly as Elasticsearch shows only refreshed documents.
/// - **Ids** are unique per index (`create` semantics): a record whose id is already in the
///   index of its day is `AlreadyExists`, also within one bulk request. The same id on another
///   day lands in another index and is created there, as in Elasticsearch.
/// - **Indices** are created by the first record that reaches them (including one refused by a
///   mapping rule, as Elasticsearch auto-creates the index before parsing the document).
/// - **Paging**: `next` is set whenever a page is full, so a last page that is exactly full is
///   followed by an empty one (as with `search_after`).
///
/// Domain faults: [`reject_next_as_retryable`](Self::reject_next_as_retryable) (429 items, not
/// stored), [`reject_field`](Self::reject_field) and [`reject_when`](Self::reject_when) (400
/// mapping rejections), [`set_unavailable`](Self::set_unavailable) (whole calls fail with a
/// transient `Unavailable`). The generic [`FaultPlan`] is checked at the start of every operation
/// under the names `ensure_templates`, `bulk`, `refresh`, `search`, `list_indices` and
/// `delete_index`.
///
/// Clones share state.
#[derive(Clone)]
pub struct InMemoryLogIndex {
    layout: IndexLayout,
    state: Arc<Mutex<LogState>>,
    faults: FaultPlan,
}

impl fmt::Debug for InMemoryLogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state();
        f.debug_struct("InMemoryLogIndex")
            .field("layout", &self.layout)
            .field("indices", &s.indices.len())
            .field("unavailable", &s.unavailable)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct StoredIndex {
    /// Every stored record and whether a refresh has made it visible yet.
    docs: BTreeMap<RecordId, (LogRecord, bool)>,
}

#[derive(Default)]
struct LogState {
    indices: BTreeMap<IndexName, StoredIndex>,
    templates: Option<IndexSettings>,
    retryable_next: u64,
    rejected_fields: BTreeSet<FieldName>,
    rules: Vec<MappingRule>,
    unavailable: bool,
    bulk_items: u64,
}

impl Default for InMemoryLogIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryLogIndex {
    /// An empty log index with the default layout (`ion-logs-YYYY.MM.DD`).
    pub fn new() -> Self {
        Self::with_layout(IndexLayout::default())
    }

    /// An empty log index with `layout`.
    pub fn with_layout(layout: IndexLayout) -> Self {
        Self {
            layout,
            state: Arc::new(Mutex::new(LogState::default())),
            faults: FaultPlan::default(),
        }
    }

    /// The same log index with `faults` checked at the start of every operation.
    pub fn with_faults(mut self, faults: FaultPlan) -> Self {
        self.faults = faults;
        self
    }

    /// The fault plan (shared: faults set through it apply to every clone).
    pub fn faults(&self) -> &FaultPlan {
        &self.faults
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` bulk items (over any number of calls) come back
    /// `Retryable { status: 429 }` and are not stored, as when Elasticsearch's write queue is
    /// full. Replaces any count still pending.
    pub fn reject_next_as_retryable(&self, n: u64) {
        self.state().retryable_next = n;
    }

    /// Every record carrying `field` is refused with `Rejected { status: 400 }` (a mapping
    /// conflict on that field) until [`clear_rejections`](Self::clear_rejections).
    pub fn reject_field(&self, field: FieldName) {
        self.state().rejected_fields.insert(field);
    }

    /// Every record for which `rule` returns a reason is refused with `Rejected { status: 400 }`
    /// and that reason, until [`clear_rejections`](Self::clear_rejections).
    pub fn reject_when(&self, rule: impl Fn(&LogRecord) -> Option<String> + Send + Sync + 'static) {
        self.state().rules.push(Arc::new(rule));
    }

    /// Removes every mapping rejection and pending 429.
    pub fn clear_rejections(&self) {
        let mut s = self.state();
        s.retryable_next = 0;
        s.rejected_fields.clear();
        s.rules.clear();
    }

    /// While `true`, every call fails with a transient `Unavailable` (no node answers).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.state().unavailable = unavailable;
    }

    /// The settings the last `ensure_templates` installed.
    pub fn templates(&self) -> Option<IndexSettings> {
        self.state().templates.clone()
    }

    /// Records stored, refreshed or not (no fault check: for test assertions).
    pub fn stored_count(&self) -> usize {
        self.state().indices.values().map(|i| i.docs.len()).sum()
    }

    /// Bulk items received so far, whatever their outcome.
    pub fn bulk_item_count(&self) -> u64 {
        self.state().bulk_items
    }

    async fn enter(&self, op: &'static str) -> Result<()> {
        self.faults.check(op).await?;
        if self.state().unavailable {
            return Err(Error::unavailable(format!(
                "log index unavailable during {op}"
            )));
        }
        Ok(())
    }
}

impl LogState {
    fn mapping_rejection(&self, record: &LogRecord) -> Option<String> {
        if let Some(field) = record
            .fields
            .keys()
            .find(|f| self.rejected_fields.contains(*f))
        {
            return Some(format!(
                "mapper_parsing_exception: failed to parse field [{field}]"
            ));
        }
        self.rules.iter().find_map(|rule| rule(record))
    }
}

/// Newest first: time descending, then id descending.
fn newest_first(a: &LogRecord, b: &LogRecord) -> std::cmp::Ordering {
    (b.time, &b.id).cmp(&(a.time, &a.id))
}

#[async_trait]
impl LogIndex for InMemoryLogIndex {
    fn capabilities(&self) -> LogIndexCapabilities {
        LogIndexCapabilities {
            flavour: SearchFlavour::InMemory,
        }
    }

    fn layout(&self) -> &IndexLayout {
        &self.layout
    }

    async fn ensure_templates(&self, settings: &IndexSettings) -> Result<()> {
        self.enter("ensure_templates").await?;
        self.state().templates = Some(settings.clone());
        Ok(())
    }

    async fn bulk(&self, records: &[LogRecord]) -> Result<Vec<BulkOutcome>> {
        self.enter("bulk").await?;
        let mut s = self.state();
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            s.bulk_items += 1;
            if s.retryable_next > 0 {
                s.retryable_next -= 1;
                outcomes.push(BulkOutcome::Retryable {
                    status: 429,
                    reason: "es_rejected_execution_exception: write queue is full".to_owned(),
                });
                continue;
            }
            let rejection = s.mapping_rejection(record);
            let index = s
                .indices
                .entry(self.layout.index_for(record.time))
                .or_default();
            let outcome = if let Some(reason) = rejection {
                BulkOutcome::Rejected {
                    status: 400,
                    reason,
                }
            } else if index.docs.contains_key(&record.id) {
                BulkOutcome::AlreadyExists
            } else {
                index
                    .docs
                    .insert(record.id.clone(), (record.clone(), false));
                BulkOutcome::Created
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn refresh(&self) -> Result<()> {
        self.enter("refresh").await?;
        for index in self.state().indices.values_mut() {
            for (_, visible) in index.docs.values_mut() {
                *visible = true;
            }
        }
        Ok(())
    }

    async fn search(&self, tenant: &TenantId, query: &LogQuery) -> Result<LogPage> {
        self.enter("search").await?;
        let s = self.state();
        // The tenant filter comes first and is not part of the query: nothing in the query can
        // widen it.
        let mut hits: Vec<&LogRecord> = s
            .indices
            .values()
            .flat_map(|i| i.docs.values())
            .filter(|(record, visible)| *visible && record.tenant == *tenant)
            .map(|(record, _)| record)
            .filter(|record| query.matches(record))
            .filter(|record| {
                query
                    .after
                    .as_ref()
                    .is_none_or(|c| (record.time, &record.id) < (c.time, &c.id))
            })
            .collect();
        hits.sort_by(|a, b| newest_first(a, b));
        let size = query.page_size();
        hits.truncate(size);
        let records: Vec<LogRecord> = hits.into_iter().cloned().collect();
        let next = if records.len() == size {
            records.last().map(|r| SearchCursor {
                time: r.time,
                id: r.id.clone(),
            })
        } else {
            None
        };
        Ok(LogPage { records, next })
    }

    async fn list_indices(&self) -> Result<Vec<IndexInfo>> {
        self.enter("list_indices").await?;
        Ok(self
            .state()
            .indices
            .iter()
            .filter(|(name, _)| self.layout.day_of(name).is_some())
            .map(|(name, index)| IndexInfo {
                name: name.clone(),
                docs: index.docs.values().filter(|(_, visible)| *visible).count() as u64,
            })
            .collect())
    }

    async fn delete_index(&self, name: &IndexName) -> Result<()> {
        self.enter("delete_index").await?;
        self.state().indices.remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::model::LogLevel;
    use crate::name::AppId;
    use crate::time::Timestamp;

    fn record(id: &str, tenant: &str, ms: i64, message: &str) -> LogRecord {
        LogRecord {
            id: RecordId::parse(id).unwrap(),
            tenant: TenantId::parse(tenant).unwrap(),
            app: AppId::parse("shop").unwrap(),
            instance: None,
            time: Timestamp::from_millis(ms),
            level: LogLevel::Info,
            message: message.to_owned(),
            fields: BTreeMap::new(),
        }
    }

    fn tenant(t: &str) -> TenantId {
        TenantId::parse(t).unwrap()
    }

    #[tokio::test]
    async fn records_are_invisible_until_refresh_but_already_deduplicated() {
        let index = InMemoryLogIndex::new();
        let r = record("r1", "acme", 1_000, "hello");
        assert_eq!(
            index.bulk(std::slice::from_ref(&r)).await.unwrap(),
            [BulkOutcome::Created]
        );
        assert_eq!(
            index.bulk(std::slice::from_ref(&r)).await.unwrap(),
            [BulkOutcome::AlreadyExists]
        );
        let q = LogQuery::default();
        assert!(index
            .search(&tenant("acme"), &q)
            .await
            .unwrap()
            .records
            .is_empty());
        assert_eq!(index.list_indices().await.unwrap()[0].docs, 0);
        index.refresh().await.unwrap();
        assert_eq!(
            index.search(&tenant("acme"), &q).await.unwrap().records,
            [r]
        );
        assert_eq!(index.list_indices().await.unwrap()[0].docs, 1);
    }

    #[tokio::test]
    async fn retryable_items_are_not_stored_and_later_items_go_through() {
        let index = InMemoryLogIndex::new();
        index.reject_next_as_retryable(2);
        let records: Vec<_> = (0..3)
            .map(|i| record(&format!("r{i}"), "acme", 1_000 + i, "x"))
            .collect();
        let out = index.bulk(&records).await.unwrap();
        assert!(matches!(out[0], BulkOutcome::Retryable { status: 429, .. }));
        assert!(matches!(out[1], BulkOutcome::Retryable { status: 429, .. }));
        assert_eq!(out[2], BulkOutcome::Created);
        assert_eq!(index.stored_count(), 1);
        // The retry of only the failed items succeeds.
        assert_eq!(
            index.bulk(&records[..2]).await.unwrap(),
            [BulkOutcome::Created, BulkOutcome::Created]
        );
        assert_eq!(index.bulk_item_count(), 5);
    }

    #[tokio::test]
    async fn mapping_rejections_by_field_and_by_rule() {
        let index = InMemoryLogIndex::new();
        let bad = FieldName::parse("status_code").unwrap();
        index.reject_field(bad.clone());
        index.reject_when(|r| {
            r.message
                .contains("poison")
                .then(|| "mapper_parsing_exception: poison".to_owned())
        });
        let mut with_field = record("r1", "acme", 1_000, "fine");
        with_field.fields.insert(bad, "x".to_owned());
        let out = index
            .bulk(&[
                with_field,
                record("r2", "acme", 1_000, "poison pill"),
                record("r3", "acme", 1_000, "fine"),
            ])
            .await
            .unwrap();
        assert!(
            matches!(&out[0], BulkOutcome::Rejected { status: 400, reason } if reason.contains("status_code"))
        );
        assert!(matches!(&out[1], BulkOutcome::Rejected { status: 400, .. }));
        assert_eq!(out[2], BulkOutcome::Created);
        index.clear_rejections();
        assert_eq!(
            index
                .bulk(&[record("r2", "acme", 1_000, "poison pill")])
                .await
                .unwrap(),
            [BulkOutcome::Created]
        );
    }

    #[tokio::test]
    async fn unavailable_fails_whole_calls_transiently() {
        let index = InMemoryLogIndex::new();
        index.set_unavailable(true);
        let err = index
            .bulk(&[record("r1", "acme", 1, "x")])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_transient());
        assert!(index
            .search(&tenant("acme"), &LogQuery::default())
            .await
            .is_err());
        assert_eq!(index.stored_count(), 0);
        index.set_unavailable(false);
        assert!(index.bulk(&[record("r1", "acme", 1, "x")]).await.is_ok());
    }

    #[tokio::test]
    async fn a_full_last_page_is_followed_by_an_empty_one() {
        let index = InMemoryLogIndex::new();
        let records: Vec<_> = (0..4)
            .map(|i| record(&format!("r{i}"), "acme", 1_000 + i, "x"))
            .collect();
        index.bulk(&records).await.unwrap();
        index.refresh().await.unwrap();
        let mut q = LogQuery {
            limit: 2,
            ..LogQuery::default()
        };
        let p1 = index.search(&tenant("acme"), &q).await.unwrap();
        assert_eq!(p1.records, [records[3].clone(), records[2].clone()]);
        q.after = p1.next;
        let p2 = index.search(&tenant("acme"), &q).await.unwrap();
        assert_eq!(p2.records, [records[1].clone(), records[0].clone()]);
        q.after = p2.next;
        assert!(q.after.is_some());
        let p3 = index.search(&tenant("acme"), &q).await.unwrap();
        assert!(p3.records.is_empty() && p3.next.is_none());
    }
}
