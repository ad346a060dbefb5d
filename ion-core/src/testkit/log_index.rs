//! The `LogIndex` conformance suite: one public async function per clause of the contract.
//!
//! Every case works against a shared real server (Elasticsearch, OpenSearch): it writes under
//! tenants of its own ([`unique_name`]), searches only those tenants, never assumes an empty
//! server, and calls `refresh` before searching (real servers are near real time). The one case
//! that deletes an index writes to a random day between 2001 and 2010, so cases and runs sharing
//! the server do not delete each other's records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::log_index::{BulkOutcome, IndexSettings, LogIndex, LogQuery};
use crate::model::{LogLevel, LogRecord};
use crate::name::{AppId, InstanceId, RecordId, TenantId};
use crate::testkit::unique_name;
use crate::time::Timestamp;

/// Expands to `mod $name` with one `#[tokio::test]` per clause of the
/// [`LogIndex`](crate::LogIndex) contract, each running the function of the same name in
/// [`testkit::log_index`](self) against a backend from `$factory` (an async block yielding
/// `Option<impl LogIndex>`, evaluated once per case; `None` skips the case).
///
/// ```text
/// ion_core::log_index_conformance!(in_memory, async { Some(ion_core::fake::InMemoryLogIndex::new()) });
/// ```
#[macro_export]
macro_rules! log_index_conformance {
    ($name:ident, $factory:expr) => {
        $crate::log_index_conformance!(@cases $name, $factory, [
            ensure_templates_is_idempotent,
            bulk_returns_one_outcome_per_record_in_order,
            an_empty_bulk_returns_no_outcomes,
            a_repeated_id_is_already_exists_and_never_duplicated,
            refreshed_records_are_searchable,
            search_returns_only_the_tenants_records,
            query_text_never_reaches_another_tenant,
            text_matches_whole_words_case_insensitively,
            time_range_includes_from_and_excludes_to,
            level_app_and_instance_filters_narrow_results,
            results_are_newest_first_with_id_breaking_ties,
            paging_with_cursors_visits_every_record_once_newest_first,
            list_indices_shows_the_index_of_a_records_day,
            delete_index_removes_the_index_and_is_idempotent,
        ]);
    };
    (@cases $name:ident, $factory:expr, [$($case:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test]
                async fn $case() {
                    let Some(backend) = ($factory).await else {
                        return;
                    };
                    $crate::testkit::log_index::$case(&backend).await;
                }
            )*
        }
    };
}

/// A tenant no other case uses, and a way to make its records.
struct Writer {
    tenant: TenantId,
    app: AppId,
    next: u32,
}

impl Writer {
    fn new() -> Self {
        Self {
            tenant: TenantId::parse(&unique_name("t")).expect("unique names are tenant ids"),
            app: AppId::parse("web").expect("literal app id"),
            next: 0,
        }
    }

    /// A record with a fresh id.
    fn record(&mut self, time: Timestamp, level: LogLevel, message: &str) -> LogRecord {
        self.next += 1;
        LogRecord {
            id: RecordId::parse(&format!("{}-{:04}", self.tenant, self.next))
                .expect("tenant ids make record ids"),
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            instance: None,
            time,
            level,
            message: message.to_owned(),
            fields: BTreeMap::new(),
        }
    }

    fn info(&mut self, time: Timestamp, message: &str) -> LogRecord {
        self.record(time, LogLevel::Info, message)
    }
}

/// Now, to the second (records of a case land in today's index).
fn base_time() -> Timestamp {
    let now = Timestamp::now().as_millis();
    Timestamp::from_millis(now - now.rem_euclid(1000))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn write(index: &dyn LogIndex, records: &[LogRecord]) -> Vec<BulkOutcome> {
    let outcomes = index.bulk(records).await.expect("bulk");
    assert_eq!(
        outcomes.len(),
        records.len(),
        "bulk must return one outcome per record: {outcomes:?}"
    );
    outcomes
}

async fn write_all(index: &dyn LogIndex, records: &[LogRecord]) {
    let outcomes = write(index, records).await;
    assert!(
        outcomes.iter().all(|o| *o == BulkOutcome::Created),
        "fresh records must all be created: {outcomes:?}"
    );
    index.refresh().await.expect("refresh");
}

/// One page of the tenant's records matching `query` (the query's own limit).
async fn page(index: &dyn LogIndex, tenant: &TenantId, query: &LogQuery) -> Vec<LogRecord> {
    index
        .search(tenant, query)
        .await
        .unwrap_or_else(|e| panic!("search {query:?}: {e}"))
        .records
}

/// The ids of every matching record of the tenant, following cursors (at most 50 pages).
async fn all_ids(index: &dyn LogIndex, tenant: &TenantId, query: &LogQuery) -> Vec<RecordId> {
    let mut query = query.clone();
    let mut out = Vec::new();
    for _ in 0..50 {
        let page = index
            .search(tenant, &query)
            .await
            .unwrap_or_else(|e| panic!("search {query:?}: {e}"));
        for record in &page.records {
            assert_eq!(
                &record.tenant, tenant,
                "search returned another tenant's record"
            );
            out.push(record.id.clone());
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => return out,
        }
    }
    panic!("search did not end after 50 pages")
}

fn text(words: &str) -> LogQuery {
    LogQuery {
        text: Some(words.to_owned()),
        ..LogQuery::default()
    }
}

fn id_set(records: &[LogRecord]) -> BTreeSet<RecordId> {
    records.iter().map(|r| r.id.clone()).collect()
}

/// `ensure_templates` succeeds when called again, and records are written and found after it.
pub async fn ensure_templates_is_idempotent(index: &dyn LogIndex) {
    let settings = IndexSettings {
        shards: 1,
        replicas: 0,
        refresh_interval: secs(1),
    };
    index
        .ensure_templates(&settings)
        .await
        .expect("ensure_templates");
    index
        .ensure_templates(&settings)
        .await
        .expect("ensure_templates a second time must succeed");
    let mut w = Writer::new();
    let r = w.info(base_time(), "after templates");
    write_all(index, std::slice::from_ref(&r)).await;
    assert_eq!(
        id_set(&page(index, &w.tenant, &LogQuery::default()).await),
        BTreeSet::from([r.id])
    );
}

/// `bulk` returns one outcome per record, in the order of the records.
pub async fn bulk_returns_one_outcome_per_record_in_order(index: &dyn LogIndex) {
    let mut w = Writer::new();
    let t = base_time();
    let a = w.info(t, "first");
    let b = w.info(t.plus(secs(1)), "second");
    let c = w.info(t.plus(secs(2)), "third");
    assert_eq!(
        write(index, &[a.clone(), b.clone()]).await,
        [BulkOutcome::Created, BulkOutcome::Created]
    );
    assert_eq!(
        write(index, &[a, c, b]).await,
        [
            BulkOutcome::AlreadyExists,
            BulkOutcome::Created,
            BulkOutcome::AlreadyExists
        ],
        "outcomes must follow the order of the records"
    );
}

/// A bulk of no records succeeds with no outcomes.
pub async fn an_empty_bulk_returns_no_outcomes(index: &dyn LogIndex) {
    assert_eq!(index.bulk(&[]).await.expect("empty bulk"), []);
}

/// A record whose id is already indexed is `AlreadyExists` (in a later request and within one
/// request) and is never stored twice.
pub async fn a_repeated_id_is_already_exists_and_never_duplicated(index: &dyn LogIndex) {
    let mut w = Writer::new();
    let t = base_time();
    let r = w.info(t, "delivered once");
    let s = w.info(t.plus(secs(1)), "sent twice in one request");
    assert_eq!(
        write(index, std::slice::from_ref(&r)).await,
        [BulkOutcome::Created]
    );
    assert_eq!(
        write(index, std::slice::from_ref(&r)).await,
        [BulkOutcome::AlreadyExists],
        "a replayed record must be reported as already there"
    );
    assert_eq!(
        write(index, &[s.clone(), s.clone()]).await,
        [BulkOutcome::Created, BulkOutcome::AlreadyExists],
        "a record repeated within one request must be created once"
    );
    index.refresh().await.expect("refresh");
    let found = all_ids(index, &w.tenant, &LogQuery::default()).await;
    assert_eq!(
        found,
        [s.id, r.id],
        "each record must be stored exactly once"
    );
}

/// After `refresh`, every delivered record is searchable, with its fields intact.
pub async fn refreshed_records_are_searchable(index: &dyn LogIndex) {
    let mut w = Writer::new();
    let mut r = w.record(base_time(), LogLevel::Warn, "disk almost full");
    r.instance = Some(InstanceId::parse("i-0abc").expect("instance id"));
    r.fields.insert(
        crate::name::FieldName::parse("path").expect("field name"),
        "/var/data".to_owned(),
    );
    write_all(index, std::slice::from_ref(&r)).await;
    let found = page(index, &w.tenant, &LogQuery::default()).await;
    assert_eq!(
        found,
        [r],
        "a refreshed record must be found as it was written"
    );
}

/// Two tenants logging the same words each find only their own records.
pub async fn search_returns_only_the_tenants_records(index: &dyn LogIndex) {
    let mut a = Writer::new();
    let mut b = Writer::new();
    let t = base_time();
    let mut records = Vec::new();
    for (i, message) in ["payment failed", "payment retried", "payment settled"]
        .iter()
        .enumerate()
    {
        records.push(a.info(t.plus(secs(i as u64)), message));
        records.push(b.info(t.plus(secs(i as u64)), message));
    }
    write_all(index, &records).await;
    for (w, mine) in [(&a, 0), (&b, 1)] {
        let expected: BTreeSet<RecordId> = records
            .iter()
            .skip(mine)
            .step_by(2)
            .map(|r| r.id.clone())
            .collect();
        for query in [LogQuery::default(), text("payment")] {
            let found: BTreeSet<RecordId> = all_ids(index, &w.tenant, &query)
                .await
                .into_iter()
                .collect();
            assert_eq!(found, expected, "tenant {} with {query:?}", w.tenant);
        }
    }
}

/// No query text, however hostile, returns another tenant's records.
pub async fn query_text_never_reaches_another_tenant(index: &dyn LogIndex) {
    let mut a = Writer::new();
    let mut b = Writer::new();
    let t = base_time();
    let mine = a.info(t, "ordinary line");
    let theirs = b.info(t, &format!("secret of {} ordinary line", b.tenant));
    write_all(index, &[mine.clone(), theirs]).await;
    let other = b.tenant.as_str();
    let hostile = [
        "*".to_owned(),
        "*:*".to_owned(),
        "_all".to_owned(),
        format!("tenant:{other}"),
        format!("tenant:{other} OR tenant:*"),
        format!(") OR (tenant:{other}"),
        "\" OR 1=1".to_owned(),
        "' OR '1'='1".to_owned(),
        r#"{"match_all":{}}"#.to_owned(),
        r#"{"bool":{"should":[{"match_all":{}}]}}"#.to_owned(),
        "secret".to_owned(),
        other.to_owned(),
        "ordinary line".to_owned(),
    ];
    for q in &hostile {
        let found = all_ids(index, &a.tenant, &text(q)).await;
        assert!(
            found.iter().all(|id| *id == mine.id),
            "query text {q:?} reached another tenant's records: {found:?}"
        );
    }
    assert_eq!(
        all_ids(index, &a.tenant, &text("ordinary line")).await,
        [mine.id],
        "the tenant still finds its own record"
    );
}

/// Text matches whole words, case-insensitively, and every word must occur.
pub async fn text_matches_whole_words_case_insensitively(index: &dyn LogIndex) {
    let mut w = Writer::new();
    let t = base_time();
    let upper = w.info(t, "Connection TIMEOUT on upstream");
    let plural = w.info(t.plus(secs(1)), "timeouts are retried");
    let split = w.info(t.plus(secs(2)), "time out after 5s");
    let other = w.info(t.plus(secs(3)), "all good");
    write_all(
        index,
        &[upper.clone(), plural.clone(), split.clone(), other.clone()],
    )
    .await;
    let cases: [(&str, Vec<&LogRecord>); 8] = [
        ("timeout", vec![&upper]),
        ("TimeOut", vec![&upper]),
        ("upstream connection", vec![&upper]),
        ("timeouts", vec![&plural]),
        ("time", vec![&split]),
        ("time-out", vec![&split]),
        ("connection good", vec![]),
        ("GOOD", vec![&other]),
    ];
    for (words, expected) in cases {
        let found: BTreeSet<RecordId> = all_ids(index, &w.tenant, &text(words))
            .await
            .into_iter()
            .collect();
        let expected: BTreeSet<RecordId> = expected.iter().map(|r| r.id.clone()).collect();
        assert_eq!(found, expected, "text {words:?}");
    }
}

/// `from` is inclusive, `to` exclusive.
pub async fn time_range_includes_from_and_excludes_to(index: &dyn LogIndex) {
    let mut w = Writer::new();
    let t = base_time();
    let r: Vec<LogRecord> = (0..4).map(|i| w.info(t.plus(secs(i)), "tick")).collect();
    write_all(index, &r).await;
    let range = |from: Option<u64>, to: Option<u64>| LogQuery {
        from: from.map(|s| t.plus(secs(s))),
        to: to.map(|s| t.plus(secs(s))),
        ..LogQuery::default()
    };
    assert_eq!(
        all_ids(index, &w.tenant, &range(Some(1), Some(3))).await,
        [r[2].id.clone(), r[1].id.clone()],
        "[from, to)"
    );
    assert_eq!(
        all_ids(index, &w.tenant, &range(Some(2), None)).await,
        [r[3].id.clone(), r[2].id.clone()],
        "from only"
    );
    assert_eq!(
        all_ids(index, &w.tenant, &range(None, Some(1))).await,
        [r[0].id.clone()],
        "to only"
    );
    assert!(
        all_ids(index, &w.tenant, &range(Some(2), Some(2)))
            .await
            .is_empty(),
        "an empty range matches nothing"
    );
}

/// Level, app and instance filters keep only the matching records.
pub async fn level_app_and_instance_filters_narrow_results(index: &dyn LogIndex) {
    let mut w = Writer::new();
    let t = base_time();
    let api = AppId::parse("api").expect("app id");
    let instance = InstanceId::parse("i-0f1").expect("instance id");
    let web_info = w.record(t, LogLevel::Info, "served");
    let web_error = w.record(t.plus(secs(1)), LogLevel::Error, "crashed");
    let mut api_error = w.record(t.plus(secs(2)), LogLevel::Error, "crashed");
    api_error.app = api.clone();
    let mut api_warn = w.record(t.plus(secs(3)), LogLevel::Warn, "slow");
    api_warn.app = api.clone();
    api_warn.instance = Some(instance.clone());
    write_all(
        index,
        &[
            web_info.clone(),
            web_error.clone(),
            api_error.clone(),
            api_warn.clone(),
        ],
    )
    .await;
    let set =
        |rs: &[&LogRecord]| -> BTreeSet<RecordId> { rs.iter().map(|r| r.id.clone()).collect() };
    let cases = [
        (
            LogQuery {
                levels: vec![LogLevel::Error],
                ..LogQuery::default()
            },
            set(&[&web_error, &api_error]),
        ),
        (
            LogQuery {
                levels: vec![LogLevel::Error, LogLevel::Warn],
                ..LogQuery::default()
            },
            set(&[&web_error, &api_error, &api_warn]),
        ),
        (
            LogQuery {
                app: Some(api.clone()),
                ..LogQuery::default()
            },
            set(&[&api_error, &api_warn]),
        ),
        (
            LogQuery {
                app: Some(api.clone()),
                levels: vec![LogLevel::Error],
                ..LogQuery::default()
            },
            set(&[&api_error]),
        ),
        (
            LogQuery {
                instance: Some(instance.clone()),
                ..LogQuery::default()
            },
            set(&[&api_warn]),
        ),
        (
            LogQuery {
                levels: vec![LogLevel::Fatal],
                ..LogQuery::default()
            },
            set(&[]),
        ),
    ];
    for (query, expected) in cases {
        let found: BTreeSet<RecordId> = all_ids(index, &w.tenant, &query)
            .await
            .into_iter()
            .collect();
        assert_eq!(found, expected, "{query:?}");
    }
}

/// Results come newest first; records logged at the same time come in descending id order.
pub async fn results_are_newest_first_with_id_breaking_ties(index: &dyn LogIndex) {
    let mut w = Writer::new();
    let t = base_time();
    let old = w.info(t, "old");
    let tie_low = w.info(t.plus(secs(5)), "tie");
    let tie_high = w.info(t.plus(secs(5)), "tie");
    let new = w.info(t.plus(secs(9)), "new");
    // Written out of order: the order of results must not depend on the order of writing.
    write_all(
        index,
        &[tie_low.clone(), new.clone(), old.clone(), tie_high.clone()],
    )
    .await;
    let found: Vec<RecordId> = page(index, &w.tenant, &LogQuery::default())
        .await
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(found, [new.id, tie_high.id, tie_low.id, old.id]);
}

/// Following `next` cursors visits every match exactly once, newest first, in full pages.
pub async fn paging_with_cursors_visits_every_record_once_newest_first(index: &dyn LogIndex) {
    let mut w = Writer::new();
    let t = base_time();
    // Pairs of records share a time, so the id tie-break is paged across too.
    let records: Vec<LogRecord> = (0..25)
        .map(|i| w.info(t.plus(secs(i / 2)), "paged line"))
        .collect();
    write_all(index, &records).await;
    let mut expected: Vec<&LogRecord> = records.iter().collect();
    expected.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
    let expected: Vec<RecordId> = expected.into_iter().map(|r| r.id.clone()).collect();

    let mut query = LogQuery {
        text: Some("paged".to_owned()),
        limit: 10,
        ..LogQuery::default()
    };
    let mut pages = Vec::new();
    loop {
        let page = index.search(&w.tenant, &query).await.expect("search");
        assert!(page.records.len() <= 10, "a page holds at most the limit");
        pages.push(
            page.records
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>(),
        );
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
        assert!(pages.len() <= 4, "paging must end: {pages:?}");
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5], "25 records in pages of 10");
    let visited: Vec<RecordId> = pages.into_iter().flatten().collect();
    assert_eq!(
        visited, expected,
        "paging must visit every record once, newest first"
    );
}

/// A time on a day between 2001 and 2010 that no other case is likely to use.
fn random_old_day() -> Timestamp {
    let name = unique_name("d");
    let n = u64::from_str_radix(&name[2..], 16).expect("unique names end in hex");
    let start = Timestamp::parse_rfc3339("2001-01-01T12:00:00Z").expect("literal time");
    start.plus(Duration::from_secs(86_400 * (n % 3_650)))
}

/// `list_indices` lists the index of the day a record was logged on.
pub async fn list_indices_shows_the_index_of_a_records_day(index: &dyn LogIndex) {
    let mut w = Writer::new();
    let time = random_old_day();
    let r = w.info(time, "long ago");
    write_all(index, std::slice::from_ref(&r)).await;
    let name = index.layout().index_for(time);
    let indices = index.list_indices().await.expect("list_indices");
    let info = indices
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} missing from {indices:?}"));
    assert!(info.docs >= 1, "{name} holds the record: {info:?}");
    let pattern = index.layout().prefix();
    assert!(
        indices
            .iter()
            .all(|i| index.layout().day_of(&i.name).is_some()),
        "list_indices lists only the layout's ({pattern}) indices: {indices:?}"
    );
    index.delete_index(&name).await.expect("cleanup");
}

/// `delete_index` removes the index and its records, and deleting it again succeeds.
pub async fn delete_index_removes_the_index_and_is_idempotent(index: &dyn LogIndex) {
    let mut w = Writer::new();
    let time = random_old_day();
    let r = w.info(time, "to be deleted");
    write_all(index, std::slice::from_ref(&r)).await;
    let day = LogQuery {
        from: Some(time.minus(secs(1))),
        to: Some(time.plus(secs(1))),
        ..LogQuery::default()
    };
    assert_eq!(
        all_ids(index, &w.tenant, &day).await,
        std::slice::from_ref(&r.id)
    );
    let name = index.layout().index_for(time);
    index.delete_index(&name).await.expect("delete_index");
    let indices = index.list_indices().await.expect("list_indices");
    assert!(
        indices.iter().all(|i| i.name != name),
        "{name} is still listed after delete: {indices:?}"
    );
    assert!(
        all_ids(index, &w.tenant, &day).await.is_empty(),
        "records of a deleted index must be gone"
    );
    index
        .delete_index(&name)
        .await
        .expect("deleting a deleted index must succeed");
}
