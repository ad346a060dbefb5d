//! Model-based test of `InMemoryLogIndex`: random bulk, refresh, search and delete sequences
//! against a `BTreeMap` model.

use std::collections::BTreeMap;

use ion_core::fake::InMemoryLogIndex;
use ion_core::{
    AppId, BulkOutcome, IndexName, LogIndex, LogLevel, LogQuery, LogRecord, RecordId, TenantId,
    Timestamp,
};
use proptest::prelude::*;

const TENANTS: [&str; 2] = ["acme", "globex"];
const WORDS: [&str; 3] = ["alpha", "beta", "gamma"];
const DAY_MS: i64 = 86_400_000;
/// 2026-11-24T00:00:00Z: records fall on this day and the two after it.
const START_MS: i64 = 1_795_478_400_000;

/// A record as generated: id, tenant, day, second of the day, word of the message.
#[derive(Clone, Debug)]
struct Spec {
    id: u8,
    tenant: usize,
    day: i64,
    second: i64,
    word: usize,
}

#[derive(Clone, Debug)]
enum Op {
    Bulk(Vec<Spec>),
    Refresh,
    Search {
        tenant: usize,
        word: Option<usize>,
        limit: usize,
    },
    DeleteIndex {
        day: i64,
    },
    ListIndices,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u8..16, 0usize..2, 0i64..3, 0i64..4, 0usize..3).prop_map(|(id, tenant, day, second, word)| {
        Spec {
            id,
            tenant,
            day,
            second,
            word,
        }
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec(spec(), 0..6).prop_map(Op::Bulk),
        2 => Just(Op::Refresh),
        3 => (0usize..2, proptest::option::of(0usize..3), 1usize..5)
            .prop_map(|(tenant, word, limit)| Op::Search { tenant, word, limit }),
        1 => (0i64..3).prop_map(|day| Op::DeleteIndex { day }),
        1 => Just(Op::ListIndices),
    ]
}

fn record(s: &Spec) -> LogRecord {
    LogRecord {
        id: RecordId::parse(&format!("r{}", s.id)).unwrap(),
        tenant: TenantId::parse(TENANTS[s.tenant]).unwrap(),
        app: AppId::parse("app").unwrap(),
        instance: None,
        time: Timestamp::from_millis(START_MS + s.day * DAY_MS + s.second * 1000),
        level: LogLevel::Info,
        message: format!("{} happened", WORDS[s.word].to_uppercase()),
        fields: BTreeMap::new(),
    }
}

fn index_of(fake: &InMemoryLogIndex, day: i64) -> IndexName {
    fake.layout()
        .index_for(Timestamp::from_millis(START_MS + day * DAY_MS))
}

/// The model: (day, id) → (record, visible since a refresh).
#[derive(Default)]
struct Model {
    docs: BTreeMap<(i64, u8), (LogRecord, bool)>,
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let fake = InMemoryLogIndex::new();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Bulk(specs) => {
                let records: Vec<LogRecord> = specs.iter().map(record).collect();
                let got = fake.bulk(&records).await.unwrap();
                let mut want = Vec::new();
                for (s, r) in specs.iter().zip(&records) {
                    match model.docs.entry((s.day, s.id)) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            want.push(BulkOutcome::AlreadyExists);
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert((r.clone(), false));
                            want.push(BulkOutcome::Created);
                        }
                    }
                }
                prop_assert_eq!(got, want);
            }
            Op::Refresh => {
                fake.refresh().await.unwrap();
                for (_, visible) in model.docs.values_mut() {
                    *visible = true;
                }
            }
            Op::Search {
                tenant,
                word,
                limit,
            } => {
                let tenant_id = TenantId::parse(TENANTS[tenant]).unwrap();
                let mut query = LogQuery {
                    text: word.map(|w| WORDS[w].to_owned()),
                    limit,
                    ..LogQuery::default()
                };
                let mut want: Vec<LogRecord> = model
                    .docs
                    .values()
                    .filter(|(r, visible)| *visible && r.tenant == tenant_id)
                    .filter(|(r, _)| {
                        word.is_none_or(|w| r.message.starts_with(&WORDS[w].to_uppercase()))
                    })
                    .map(|(r, _)| r.clone())
                    .collect();
                want.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
                // Page through everything; every page but the last is full.
                let mut got = Vec::new();
                for _ in 0..100 {
                    let page = fake.search(&tenant_id, &query).await.unwrap();
                    prop_assert!(page.records.len() <= limit);
                    prop_assert_eq!(page.next.is_some(), page.records.len() == limit);
                    got.extend(page.records);
                    match page.next {
                        Some(next) => query.after = Some(next),
                        None => break,
                    }
                }
                prop_assert_eq!(got, want);
            }
            Op::DeleteIndex { day } => {
                fake.delete_index(&index_of(&fake, day)).await.unwrap();
                model.docs.retain(|(d, _), _| *d != day);
            }
            Op::ListIndices => {
                let got: Vec<(IndexName, u64)> = fake
                    .list_indices()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|i| (i.name, i.docs))
                    .collect();
                let mut want: BTreeMap<IndexName, u64> = BTreeMap::new();
                for ((day, _), (_, visible)) in &model.docs {
                    *want.entry(index_of(&fake, *day)).or_default() += u64::from(*visible);
                }
                prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
            }
        }
        prop_assert_eq!(fake.stored_count(), model.docs.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn in_memory_log_index_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
