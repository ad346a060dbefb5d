//! Shared pieces of the reliability tests: ingest clients that remember what was acknowledged,
//! and an exactly-once check against the index.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ion_core::{LogIndex, LogQuery, TenantId};

/// What the clients saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// Messages of lines answered 200, per tenant.
    pub acked: Mutex<BTreeMap<TenantId, BTreeSet<String>>>,
    /// Messages of requests whose fate is unknown (connection reset, timeout).
    pub unknown: Mutex<BTreeSet<String>>,
    /// Status counts.
    pub statuses: Mutex<BTreeMap<u16, u64>>,
    /// Requests that failed without an HTTP answer.
    pub transport_errors: AtomicU64,
    /// 5xx answers seen while `watch_5xx` was set.
    pub watched_5xx: AtomicU64,
    /// Count 5xx answers into `watched_5xx` while true.
    pub watch_5xx: AtomicBool,
}

/// Runs `clients` ingest loops (tenants round robin over `tokens`) until `stop`; each request
/// carries `lines` lines with unique messages.
pub fn spawn_clients(
    base: Arc<Mutex<String>>,
    tokens: Vec<(TenantId, String)>,
    clients: usize,
    lines: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
    log: Arc<ClientLog>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|c| {
            let (tenant, token) = tokens[c % tokens.len()].clone();
            let base = base.clone();
            let stop = stop.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut batch = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    batch += 1;
                    let messages: Vec<String> = (0..lines)
                        .map(|l| format!("c{c}b{batch}l{l} payload"))
                        .collect();
                    let body = messages
                        .iter()
                        .map(|m| {
                            serde_json::json!({"app": "web", "level": "info", "message": m})
                                .to_string()
                        })
                        .collect::<Vec<_>>()
                        .join("\n");
                    let url = format!("{}/v1/logs", base.lock().unwrap());
                    match http.post(url).bearer_auth(&token).body(body).send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            *log.statuses.lock().unwrap().entry(status).or_default() += 1;
                            if status >= 500 && log.watch_5xx.load(Ordering::Relaxed) {
                                log.watched_5xx.fetch_add(1, Ordering::Relaxed);
                            }
                            if status == 429 || status >= 500 {
                                // Back off as Retry-After asks, roughly.
                                tokio::time::sleep(Duration::from_millis(250)).await;
                            }
                            if status == 200 {
                                let v: serde_json::Value = resp.json().await.unwrap_or_default();
                                assert_eq!(v["accepted"].as_u64(), Some(lines as u64));
                                log.acked
                                    .lock()
                                    .unwrap()
                                    .entry(tenant.clone())
                                    .or_default()
                                    .extend(messages);
                            }
                        }
                        Err(_) => {
                            log.transport_errors.fetch_add(1, Ordering::Relaxed);
                            log.unknown.lock().unwrap().extend(messages);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect()
}

/// Every message of `tenant` in the index, with how often each occurs.
pub async fn indexed_messages(index: &dyn LogIndex, tenant: &TenantId) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    let mut q = LogQuery {
        limit: 1000,
        ..LogQuery::default()
    };
    let mut ids = BTreeSet::new();
    loop {
        let page = index.search(tenant, &q).await.expect("search");
        for r in page.records {
            assert_eq!(&r.tenant, tenant);
            assert!(
                ids.insert(r.id.clone()),
                "record id {} returned twice",
                r.id
            );
            *out.entry(r.message).or_default() += 1;
        }
        match page.next {
            Some(n) => q.after = Some(n),
            None => return out,
        }
    }
}

/// Asserts every acknowledged message is indexed exactly once, nothing is duplicated, and
/// nothing appears that no client sent. Returns the number of records indexed.
pub async fn assert_exactly_once(index: &dyn LogIndex, log: &ClientLog) -> u64 {
    index.refresh().await.expect("refresh");
    let acked = log.acked.lock().unwrap().clone();
    let unknown = log.unknown.lock().unwrap().clone();
    let mut total = 0;
    for (tenant, messages) in &acked {
        let found = indexed_messages(index, tenant).await;
        let dups: Vec<_> = found.iter().filter(|(_, n)| **n > 1).take(5).collect();
        assert!(dups.is_empty(), "{tenant}: duplicated records: {dups:?}");
        let missing: Vec<_> = messages
            .iter()
            .filter(|m| !found.contains_key(*m))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "{tenant}: {} acknowledged records missing, e.g. {missing:?}",
            messages.iter().filter(|m| !found.contains_key(*m)).count()
        );
        let strangers: Vec<_> = found
            .keys()
            .filter(|m| !messages.contains(*m) && !unknown.contains(*m))
            .take(5)
            .collect();
        assert!(
            strangers.is_empty(),
            "{tenant}: records nobody sent: {strangers:?}"
        );
        total += found.len() as u64;
    }
    total
}

/// Parses `ion_logs_records_total` and `ion_logs_in_flight` out of the metrics text.
pub fn ledger_from_metrics(text: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for line in text.lines() {
        let (name, rest) = match line.split_once('{') {
            Some(x) => x,
            None => continue,
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let get = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
        };
        let Some(tenant) = get("tenant") else {
            continue;
        };
        let stage = match name {
            "ion_logs_records_total" => get("stage").unwrap_or_default(),
            "ion_logs_in_flight" => "in_flight".to_owned(),
            _ => continue,
        };
        out.entry(tenant)
            .or_default()
            .insert(stage, value.trim().parse().unwrap_or(0));
    }
    out
}

/// Polls `/metrics` until every tenant has nothing in flight; returns the ledger.
pub async fn wait_drained(base: &str, limit: Duration) -> BTreeMap<String, BTreeMap<String, u64>> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(resp) = http.get(format!("{base}/metrics")).send().await {
            if let Ok(text) = resp.text().await {
                let ledger = ledger_from_metrics(&text);
                if !ledger.is_empty() && ledger.values().all(|s| s.get("in_flight") == Some(&0)) {
                    return ledger;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "records still in flight after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts the ledger identities for every tenant and returns indexed per tenant.
pub fn assert_ledger_adds_up(
    ledger: &BTreeMap<String, BTreeMap<String, u64>>,
) -> BTreeMap<String, u64> {
    let mut indexed = BTreeMap::new();
    for (t, s) in ledger {
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        assert_eq!(g("received"), g("durable") + g("rejected"), "{t}: {s:?}");
        assert_eq!(
            g("durable"),
            g("indexed") + g("dead_lettered") + g("in_flight"),
            "{t}: {s:?}"
        );
        indexed.insert(t.clone(), g("indexed"));
    }
    indexed
}
