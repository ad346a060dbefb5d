//! The per-tenant ledger: where every line that reached the node went.
//!
//! `received = durable + rejected` (a line is either refused with an error answer or made
//! durable and acknowledged) and `durable = indexed + dead_lettered + in_flight`. Both hold at
//! every quiescent point and across restarts: the shipper persists the settled part with its
//! checkpoint and recounts the WAL after it on start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use ion_core::TenantId;
use serde::{Deserialize, Serialize};

/// One tenant's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCounts {
    /// Lines that reached the node (durable + rejected).
    pub received: u64,
    /// Lines refused (bad line, over quota, disk budget full, write failed).
    pub rejected: u64,
    /// Lines fsynced in the WAL and acknowledged.
    pub durable: u64,
    /// Lines delivered to the index (created, or found already there).
    pub indexed: u64,
    /// Lines the index refused for good, kept in the dead-letter store.
    pub dead_lettered: u64,
}

impl TenantCounts {
    /// Durable lines not yet indexed or dead-lettered.
    pub fn in_flight(&self) -> u64 {
        self.durable
            .saturating_sub(self.indexed)
            .saturating_sub(self.dead_lettered)
    }
}

/// The ledger of every tenant, plus which tenants' streams are paused and why.
#[derive(Debug, Default)]
pub struct Ledger {
    counts: Mutex<HashMap<TenantId, TenantCounts>>,
    paused: Mutex<BTreeMap<TenantId, String>>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes one tenant's counters.
    pub fn update(&self, tenant: &TenantId, f: impl FnOnce(&mut TenantCounts)) {
        let mut counts = self.counts.lock().expect("ledger lock");
        match counts.get_mut(tenant) {
            Some(c) => f(c),
            None => f(counts.entry(tenant.clone()).or_default()),
        }
    }

    /// Lines refused: counted as received and rejected.
    pub fn rejected(&self, tenant: &TenantId, lines: u64) {
        self.update(tenant, |c| {
            c.received += lines;
            c.rejected += lines;
        });
    }

    /// Lines made durable: counted as received and durable.
    pub fn durable(&self, tenant: &TenantId, lines: u64) {
        self.update(tenant, |c| {
            c.received += lines;
            c.durable += lines;
        });
    }

    /// One tenant's counters.
    pub fn get(&self, tenant: &TenantId) -> TenantCounts {
        self.counts
            .lock()
            .expect("ledger lock")
            .get(tenant)
            .copied()
            .unwrap_or_default()
    }

    /// Every tenant's counters, sorted.
    pub fn snapshot(&self) -> BTreeMap<TenantId, TenantCounts> {
        self.counts
            .lock()
            .expect("ledger lock")
            .iter()
            .map(|(t, c)| (t.clone(), *c))
            .collect()
    }

    /// Replaces all counters (on start, from the checkpoint and the WAL).
    pub fn restore(&self, counts: BTreeMap<TenantId, TenantCounts>) {
        *self.counts.lock().expect("ledger lock") = counts.into_iter().collect();
    }

    /// Marks a tenant's stream paused (alert) or resumed.
    pub fn set_paused(&self, tenant: &TenantId, reason: Option<String>) {
        let mut p = self.paused.lock().expect("ledger lock");
        match reason {
            Some(r) => {
                p.insert(tenant.clone(), r);
            }
            None => {
                p.remove(tenant);
            }
        }
    }

    /// Paused tenants and why.
    pub fn paused(&self) -> BTreeMap<TenantId, String> {
        self.paused.lock().expect("ledger lock").clone()
    }
}
