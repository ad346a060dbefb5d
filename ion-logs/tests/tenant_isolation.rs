//! Tenant isolation as a property: generated tenants, records and adversarial query strings,
//! against the fake and against real Elasticsearch. No result ever belongs to another tenant,
//! and each tenant gets exactly what the reference model (`LogQuery::matches`) says.

use std::collections::BTreeMap;
use std::time::Duration;

use ion_core::fake::InMemoryLogIndex;
use ion_core::testkit::{peer_unreachable, peer_var, unique_name};
use ion_core::{
    AppId, IndexSettings, LogIndex, LogLevel, LogQuery, LogRecord, RecordId, TenantId, Timestamp,
};
use ion_logs::{ElasticsearchConfig, ElasticsearchLogIndex};
use proptest::prelude::*;

const WORDS: &[&str] = &[
    "error",
    "timeout",
    "user",
    "secret",
    "tenant",
    "OR",
    "AND",
    "*",
    "match_all",
    "_id",
];

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        Just("tenant:*".to_owned()),
        Just(r#"{"match_all":{}}"#.to_owned()),
        Just(r#"" OR tenant:b OR ""#.to_owned()),
        Just("secret OR 1=1 --".to_owned()),
        Just("\u{0}\u{1f}\\\\\"".to_owned()),
        Just("(user) || _exists_:tenant".to_owned()),
        prop::sample::select(WORDS).prop_map(str::to_owned),
        "\\PC{0,30}",
    ]
}

#[derive(Clone, Debug)]
struct Case {
    records: Vec<(usize, Vec<&'static str>)>,
    queries: Vec<String>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(
            (
                0usize..3,
                prop::collection::vec(prop::sample::select(WORDS), 1..5),
            ),
            1..25,
        ),
        prop::collection::vec(hostile(), 1..6),
    )
        .prop_map(|(records, queries)| Case { records, queries })
}

async fn check(index: &dyn LogIndex, c: &Case) {
    let tenants: Vec<TenantId> = (0..3)
        .map(|_| TenantId::parse(&unique_name("iso")).unwrap())
        .collect();
    let base = Timestamp::now().as_millis();
    let records: Vec<LogRecord> = c
        .records
        .iter()
        .enumerate()
        .map(|(i, (t, words))| LogRecord {
            id: RecordId::parse(&format!("{}-{i}", tenants[*t])).unwrap(),
            tenant: tenants[*t].clone(),
            app: AppId::parse("web").unwrap(),
            instance: None,
            time: Timestamp::from_millis(base - i as i64),
            level: LogLevel::Info,
            // Other tenants' names appear in messages too: a query naming them must still
            // stay inside the asking tenant.
            message: format!("{} {}", words.join(" "), tenants[(t + 1) % 3]),
            fields: BTreeMap::new(),
        })
        .collect();
    let outcomes = index.bulk(&records).await.expect("bulk");
    assert!(outcomes.iter().all(|o| o.is_delivered()), "{outcomes:?}");
    index.refresh().await.expect("refresh");
    let mut queries: Vec<String> = c.queries.clone();
    queries.extend(tenants.iter().map(|t| t.to_string()));
    queries.push(String::new());
    for tenant in &tenants {
        for text in &queries {
            let q = LogQuery {
                text: Some(text.clone()),
                limit: 7,
                ..LogQuery::default()
            };
            let mut got = Vec::new();
            let mut page_q = q.clone();
            loop {
                let page = index.search(tenant, &page_q).await.expect("search");
                for r in &page.records {
                    assert_eq!(&r.tenant, tenant, "query {text:?} reached another tenant");
                }
                got.extend(page.records.into_iter().map(|r| r.id));
                match page.next {
                    Some(n) => page_q.after = Some(n),
                    None => break,
                }
            }
            let want: Vec<RecordId> = records
                .iter()
                .filter(|r| &r.tenant == tenant && q.matches(r))
                .map(|r| r.id.clone())
                .collect();
            assert_eq!(got, want, "tenant {tenant}, query {text:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn fake_never_leaks_across_tenants(c in case()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(&InMemoryLogIndex::new(), &c));
    }
}

async fn es() -> Option<ElasticsearchLogIndex> {
    let what = "tenant isolation on elasticsearch";
    let url = peer_var("ION_TEST_ES_URL", what)?;
    let config = ElasticsearchConfig::builder()
        .nodes([url])
        .index_prefix("ion-isolation")
        .build()
        .unwrap();
    let index = match ElasticsearchLogIndex::connect(config).await {
        Ok(i) => i,
        Err(e) => return peer_unreachable("ION_TEST_ES_URL", what, &e),
    };
    let settings = IndexSettings {
        shards: 2,
        replicas: 0,
        refresh_interval: Duration::from_secs(1),
    };
    index.ensure_templates(&settings).await.expect("templates");
    Some(index)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn elasticsearch_never_leaks_across_tenants(c in case()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            if let Some(index) = es().await {
                check(&index, &c).await;
            }
        });
    }
}
