//! The shipper: WAL → per-tenant queues → fair bulk batches → `LogIndex`, with per-item retry,
//! dead letters, auth pauses, a durable checkpoint, and archiving before deletion.
//!
//! **Invariants.** The checkpoint only ever moves past records the index acknowledged (created
//! or 409) or the dead-letter store holds. Only transient item failures are retried, with
//! jittered exponential back-off per tenant; a 401/403 pauses that tenant and raises an alert,
//! it never drops. One tenant's full or paused queue never blocks the others: its further records
//! are skipped by the main reader and re-read from the WAL later (`lagging_from`). A sealed
//! segment is deleted only after the saved checkpoint is past it and it is archived.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ion_core::fake::SeededRng;
use ion_core::{
    BlobKey, BlobStore, BlobStoreExt, BulkOutcome, CollectionName, DocQuery, DocumentBody,
    DocumentId, DocumentStore, DocumentStoreExt, Error, ErrorKind, FieldFilter, FieldPath,
    LogIndex, LogRecord, Result, Scalar, TenantId, Timestamp,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::codec::{self, record_id, NodeToken, WalEntry, SEGMENT_HEADER_LEN};
use crate::ledger::{Ledger, TenantCounts};
use crate::wal::{Checkpoint, WalPosition, WriteAheadLog};

/// The dead-letter collection.
pub const DEAD_LETTERS: &str = "ion_log_dead_letters";

/// Settings of the shipper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShipperConfig {
    /// Most records per bulk request.
    pub batch_docs: usize,
    /// Most bytes (approximate) per bulk request.
    pub batch_bytes: usize,
    /// With a bulk already running, wait at most this long (ms) to fill the next batch.
    pub linger_ms: u64,
    /// Bulk requests in flight at once.
    pub concurrency: usize,
    /// Records of one tenant held in memory (bytes); past it the tenant lags and is re-read.
    pub tenant_queue_bytes: usize,
    /// Records of all tenants held in memory (bytes).
    pub total_queue_bytes: usize,
    /// First retry back-off (ms); doubles per failure, with full jitter.
    pub retry_base_ms: u64,
    /// Largest retry back-off (ms).
    pub retry_max_ms: u64,
    /// How long a tenant stays paused after a 401/403 before one probe (ms).
    pub auth_pause_ms: u64,
    /// How often the checkpoint is saved (ms).
    pub checkpoint_interval_ms: u64,
    /// Blob key prefix of archived segments.
    pub archive_prefix: String,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            batch_docs: 2000,
            batch_bytes: 5 << 20,
            linger_ms: 20,
            concurrency: 2,
            tenant_queue_bytes: 4 << 20,
            total_queue_bytes: 64 << 20,
            retry_base_ms: 200,
            retry_max_ms: 10_000,
            auth_pause_ms: 30_000,
            checkpoint_interval_ms: 200,
            archive_prefix: "wal-archive".into(),
        }
    }
}

/// What the shipper reports for metrics and health.
#[derive(Debug, Default)]
pub struct ShipperStatus {
    /// When a record was last delivered or dead-lettered (ms since the epoch).
    pub last_progress_ms: AtomicI64,
    /// Bulk requests sent.
    pub bulks: AtomicU64,
    /// Whole bulk requests that failed.
    pub bulk_failures: AtomicU64,
    /// Items sent again after a transient failure.
    pub item_retries: AtomicU64,
    /// Segments archived and deleted.
    pub archived_segments: AtomicU64,
    /// Archive uploads that failed (retried later).
    pub archive_failures: AtomicU64,
    /// The saved checkpoint's segment.
    pub checkpoint_segment: AtomicU64,
    /// Whether the shipper loop is running.
    pub running: AtomicBool,
}

/// A record the index refused for good, as kept in the dead-letter store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Owner (also inside `record`; here for filtering).
    pub tenant: TenantId,
    /// The original record, id included.
    pub record: LogRecord,
    /// The index's status for it.
    pub status: u16,
    /// The index's reason.
    pub reason: String,
    /// When it was dead-lettered.
    pub at: Timestamp,
}

/// The backends the shipper works with.
#[derive(Clone, Debug)]
pub struct ShipperDeps {
    /// The WAL to ship from.
    pub wal: Arc<WriteAheadLog>,
    /// Where records go.
    pub index: Arc<dyn LogIndex>,
    /// Where refused records go.
    pub dead_letters: Arc<dyn DocumentStore>,
    /// Where sealed segments are archived before deletion.
    pub archive: Arc<dyn BlobStore>,
    /// The ledger to keep.
    pub ledger: Arc<Ledger>,
}

/// A running shipper.
#[derive(Debug)]
pub struct ShipperHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Its status.
    pub status: Arc<ShipperStatus>,
}

impl ShipperHandle {
    /// Stops after the running bulks finish, saving the checkpoint.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Whether the loop is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

#[derive(Serialize, Deserialize, Default)]
struct SavedState {
    tenants: BTreeMap<TenantId, Settled>,
}

#[derive(Clone, Copy, Serialize, Deserialize, Default)]
struct Settled {
    indexed: u64,
    dead_lettered: u64,
    rejected: u64,
}

struct Item {
    pos: WalPosition,
    record: LogRecord,
    bytes: usize,
}

#[derive(Default)]
struct TenantQueue {
    items: VecDeque<Item>,
    bytes: usize,
    lagging_from: Option<WalPosition>,
    not_before: Option<Instant>,
    failures: u32,
    paused_until: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Pending,
    Indexed,
    DeadLettered,
}

enum ItemResult {
    Delivered,
    DeadLettered,
    Retry,
    AuthPaused(String),
}

struct BatchDone {
    items: Vec<Item>,
    results: Vec<ItemResult>,
}

/// Recounts the ledger on start: the settled part from the checkpoint, plus every WAL entry
/// at or after the checkpoint as durable and in flight.
fn restore_ledger(
    wal: &WriteAheadLog,
    ledger: &Ledger,
    checkpoint: &Option<Checkpoint>,
) -> Result<(WalPosition, BTreeMap<TenantId, Settled>)> {
    let (start, saved) = match checkpoint {
        Some(c) => (
            c.position,
            serde_json::from_value::<SavedState>(c.state.clone()).unwrap_or_default(),
        ),
        None => (wal.first_position(), SavedState::default()),
    };
    let mut counts: BTreeMap<TenantId, TenantCounts> = BTreeMap::new();
    for (t, s) in &saved.tenants {
        let c = counts.entry(t.clone()).or_default();
        c.indexed = s.indexed;
        c.dead_lettered = s.dead_lettered;
        c.rejected = s.rejected;
        c.durable = s.indexed + s.dead_lettered;
    }
    let mut pos = start;
    loop {
        let r = wal.read(pos, 4 << 20)?;
        if r.entries.is_empty() {
            break;
        }
        for (_, payload) in &r.entries {
            if let Some(t) = codec::payload_tenant(payload) {
                counts.entry(t).or_default().durable += 1;
            }
        }
        pos = r.next;
    }
    for c in counts.values_mut() {
        c.received = c.durable + c.rejected;
    }
    ledger.restore(counts);
    Ok((start, saved.tenants))
}

/// Starts the shipper. `checkpoint` is what [`WriteAheadLog::open`] returned.
pub fn spawn_shipper(
    deps: ShipperDeps,
    config: ShipperConfig,
    checkpoint: Option<Checkpoint>,
) -> Result<ShipperHandle> {
    let (start, settled) = restore_ledger(&deps.wal, &deps.ledger, &checkpoint)?;
    let status = Arc::new(ShipperStatus::default());
    status
        .last_progress_ms
        .store(Timestamp::now().as_millis(), Ordering::Relaxed);
    status.running.store(true, Ordering::Relaxed);
    let (stop, stop_rx) = watch::channel(false);
    let node = deps.wal.node().clone();
    let seed = Timestamp::now().as_millis() as u64;
    let shipper = Shipper {
        durable_rx: deps.wal.subscribe(),
        deps,
        config,
        node,
        status: status.clone(),
        tenants: HashMap::new(),
        rr: VecDeque::new(),
        inflight: BTreeMap::new(),
        settled,
        cursor: start,
        saved: start,
        queued_bytes: 0,
        rng: SeededRng::new(seed),
        last_dispatch: Instant::now(),
        last_save: Instant::now(),
    };
    let task = tokio::spawn(shipper.run(stop_rx));
    Ok(ShipperHandle { stop, task, status })
}

struct Shipper {
    deps: ShipperDeps,
    config: ShipperConfig,
    node: NodeToken,
    status: Arc<ShipperStatus>,
    tenants: HashMap<TenantId, TenantQueue>,
    rr: VecDeque<TenantId>,
    inflight: BTreeMap<WalPosition, (TenantId, Slot)>,
    settled: BTreeMap<TenantId, Settled>,
    cursor: WalPosition,
    saved: WalPosition,
    queued_bytes: usize,
    rng: SeededRng,
    last_dispatch: Instant,
    last_save: Instant,
    durable_rx: watch::Receiver<WalPosition>,
}

impl Shipper {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut running: JoinSet<BatchDone> = JoinSet::new();
        let mut archiving: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            let stopping = *stop.borrow();
            if stopping && running.is_empty() {
                break;
            }
            let caught_up = if stopping {
                true
            } else {
                match self.fill().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "wal read failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            };
            if !stopping {
                while running.len() < self.config.concurrency.max(1) {
                    let Some(batch) = self.next_batch(running.is_empty()) else {
                        break;
                    };
                    self.status.bulks.fetch_add(1, Ordering::Relaxed);
                    let index = self.deps.index.clone();
                    let dlq = self.deps.dead_letters.clone();
                    running.spawn(ship_batch(index, dlq, batch));
                    self.last_dispatch = Instant::now();
                }
            }
            self.maybe_checkpoint(false).await;
            if archiving.as_ref().is_none_or(|h| h.is_finished()) && !stopping {
                archiving = self.archive_task();
            }

            let wake = self.next_wake();
            tokio::select! {
                Some(done) = running.join_next(), if !running.is_empty() => {
                    match done {
                        Ok(done) => self.settle(done),
                        Err(e) => tracing::error!(error = %e, "bulk task failed"),
                    }
                }
                _ = self.durable_rx.changed(), if caught_up && !stopping => {}
                _ = tokio::time::sleep_until(wake) => {}
                _ = stop.changed(), if !stopping => {}
            }
        }
        if let Some(h) = archiving {
            let _ = h.await;
        }
        self.maybe_checkpoint(true).await;
        self.status.running.store(false, Ordering::Relaxed);
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(self.config.checkpoint_interval_ms.max(10));
        for q in self.tenants.values() {
            if q.items.is_empty() && q.lagging_from.is_none() {
                continue;
            }
            for t in [q.not_before, q.paused_until].into_iter().flatten() {
                if t > now {
                    wake = wake.min(t);
                }
            }
        }
        if self.tenants.values().any(|q| !q.items.is_empty()) {
            wake = wake.min(self.last_dispatch + Duration::from_millis(self.config.linger_ms));
        }
        wake.max(now + Duration::from_millis(1))
    }

    async fn read(&self, from: WalPosition) -> Result<crate::wal::WalRead> {
        let wal = self.deps.wal.clone();
        tokio::task::spawn_blocking(move || wal.read(from, 1 << 20))
            .await
            .map_err(|e| Error::unexpected(format!("wal read task: {e}")))?
    }

    fn to_item(&self, pos: WalPosition, payload: &[u8]) -> Option<Item> {
        match WalEntry::decode(payload) {
            Some(entry) => {
                let id = record_id(&entry.tenant, &self.node, pos.segment, pos.offset);
                Some(Item {
                    pos,
                    bytes: payload.len() + 64,
                    record: entry.into_record(id),
                })
            }
            None => {
                // Checksummed but not an entry: only a bug writes this. Counted, never silent.
                self.deps
                    .wal
                    .stats()
                    .lost_bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                tracing::error!(
                    segment = pos.segment,
                    offset = pos.offset,
                    "wal entry does not decode, skipped"
                );
                None
            }
        }
    }

    fn enqueue(&mut self, item: Item) {
        let tenant = item.record.tenant.clone();
        self.inflight
            .insert(item.pos, (tenant.clone(), Slot::Pending));
        self.queued_bytes += item.bytes;
        let q = self.tenants.entry(tenant.clone()).or_default();
        if q.items.is_empty() && !self.rr.contains(&tenant) {
            self.rr.push_back(tenant);
        }
        q.bytes += item.bytes;
        q.items.push_back(item);
    }

    /// Reads new WAL entries into the queues and lets lagging tenants catch up. Returns true
    /// when the main reader is at the durable end.
    async fn fill(&mut self) -> Result<bool> {
        let mut caught_up = false;
        for _ in 0..8 {
            if self.queued_bytes >= self.config.total_queue_bytes {
                break;
            }
            let r = self.read(self.cursor).await?;
            if r.entries.is_empty() {
                self.cursor = r.next;
                caught_up = true;
                break;
            }
            for (pos, payload) in &r.entries {
                let Some(tenant) = codec::payload_tenant(payload) else {
                    let _ = self.to_item(*pos, payload);
                    continue;
                };
                let q = self.tenants.entry(tenant.clone()).or_default();
                if q.lagging_from.is_some() {
                    continue;
                }
                if q.bytes >= self.config.tenant_queue_bytes {
                    q.lagging_from = Some(*pos);
                    continue;
                }
                if let Some(item) = self.to_item(*pos, payload) {
                    self.enqueue(item);
                }
            }
            self.cursor = r.next;
        }
        // Catch up tenants that lag, when they have room and are not held back.
        let now = Instant::now();
        let lagging: Vec<TenantId> = self
            .tenants
            .iter()
            .filter(|(_, q)| {
                q.lagging_from.is_some()
                    && q.bytes < self.config.tenant_queue_bytes / 2
                    && q.paused_until.is_none_or(|p| p <= now)
            })
            .map(|(t, _)| t.clone())
            .collect();
        for tenant in lagging {
            let mut from = self.tenants[&tenant].lagging_from.expect("lagging");
            'scan: for _ in 0..8 {
                if from >= self.cursor {
                    self.tenants.get_mut(&tenant).expect("tenant").lagging_from = None;
                    break;
                }
                let r = self.read(from).await?;
                if r.entries.is_empty() {
                    break;
                }
                for (pos, payload) in &r.entries {
                    if *pos >= self.cursor {
                        self.tenants.get_mut(&tenant).expect("tenant").lagging_from = None;
                        break 'scan;
                    }
                    if codec::payload_tenant(payload).as_ref() != Some(&tenant) {
                        continue;
                    }
                    if self.tenants[&tenant].bytes >= self.config.tenant_queue_bytes {
                        self.tenants.get_mut(&tenant).expect("tenant").lagging_from = Some(*pos);
                        break 'scan;
                    }
                    if let Some(item) = self.to_item(*pos, payload) {
                        self.enqueue(item);
                    }
                }
                from = r.next;
                self.tenants.get_mut(&tenant).expect("tenant").lagging_from = Some(from);
            }
        }
        Ok(caught_up)
    }

    fn ready(&self, q: &TenantQueue, now: Instant) -> bool {
        !q.items.is_empty()
            && q.not_before.is_none_or(|t| t <= now)
            && q.paused_until.is_none_or(|t| t <= now)
    }

    /// Builds the next batch round-robin across ready tenants, or `None` when it should wait.
    fn next_batch(&mut self, idle: bool) -> Option<Vec<Item>> {
        let now = Instant::now();
        let ready: Vec<TenantId> = self
            .rr
            .iter()
            .filter(|t| self.tenants.get(*t).is_some_and(|q| self.ready(q, now)))
            .cloned()
            .collect();
        if ready.is_empty() {
            return None;
        }
        let ready_docs: usize = ready.iter().map(|t| self.tenants[t].items.len()).sum();
        let lingered = now >= self.last_dispatch + Duration::from_millis(self.config.linger_ms);
        if !idle && !lingered && ready_docs < self.config.batch_docs {
            return None;
        }
        let share = (self.config.batch_docs / ready.len()).max(1);
        let mut batch = Vec::new();
        let mut bytes = 0;
        'fill: loop {
            let mut took_any = false;
            for t in &ready {
                let q = self.tenants.get_mut(t).expect("tenant");
                for _ in 0..share {
                    if batch.len() >= self.config.batch_docs || bytes >= self.config.batch_bytes {
                        break 'fill;
                    }
                    let Some(item) = q.items.pop_front() else {
                        break;
                    };
                    q.bytes -= item.bytes;
                    self.queued_bytes -= item.bytes;
                    bytes += item.bytes;
                    batch.push(item);
                    took_any = true;
                }
            }
            if !took_any {
                break;
            }
        }
        // Rotate so the next batch starts with another tenant.
        if let Some(first) = self.rr.pop_front() {
            self.rr.push_back(first);
        }
        self.rr
            .retain(|t| self.tenants.get(t).is_some_and(|q| !q.items.is_empty()));
        Some(batch)
    }

    fn backoff(&mut self, failures: u32) -> Duration {
        let cap = self
            .config
            .retry_base_ms
            .saturating_mul(1u64 << failures.min(16))
            .min(self.config.retry_max_ms)
            .max(1);
        Duration::from_millis(cap / 2 + self.rng.below(cap / 2 + 1))
    }

    fn settle(&mut self, done: BatchDone) {
        let now = Instant::now();
        let mut requeue: BTreeMap<TenantId, Vec<Item>> = BTreeMap::new();
        let mut progressed = false;
        for (item, result) in done.items.into_iter().zip(done.results) {
            let tenant = item.record.tenant.clone();
            match result {
                ItemResult::Delivered | ItemResult::DeadLettered => {
                    let dead = matches!(result, ItemResult::DeadLettered);
                    if let Some(slot) = self.inflight.get_mut(&item.pos) {
                        slot.1 = if dead {
                            Slot::DeadLettered
                        } else {
                            Slot::Indexed
                        };
                    }
                    self.deps.ledger.update(&tenant, |c| {
                        if dead {
                            c.dead_lettered += 1
                        } else {
                            c.indexed += 1
                        }
                    });
                    let q = self.tenants.entry(tenant.clone()).or_default();
                    q.failures = 0;
                    q.not_before = None;
                    if q.paused_until.take().is_some() {
                        self.deps.ledger.set_paused(&tenant, None);
                        tracing::info!(tenant = %tenant, "tenant stream resumed");
                    }
                    progressed = true;
                }
                ItemResult::Retry => {
                    self.status.item_retries.fetch_add(1, Ordering::Relaxed);
                    requeue.entry(tenant).or_default().push(item);
                }
                ItemResult::AuthPaused(reason) => {
                    let q = self.tenants.entry(tenant.clone()).or_default();
                    if q.paused_until.is_none_or(|p| p <= now) {
                        tracing::error!(tenant = %tenant, reason = %reason, alert = true, "index refused credentials; tenant stream paused");
                    }
                    q.paused_until = Some(now + Duration::from_millis(self.config.auth_pause_ms));
                    self.deps.ledger.set_paused(&tenant, Some(reason));
                    requeue.entry(tenant).or_default().push(item);
                }
            }
        }
        for (tenant, items) in requeue {
            let failures = {
                let q = self.tenants.entry(tenant.clone()).or_default();
                q.failures += 1;
                q.failures
            };
            let wait = self.backoff(failures);
            let q = self.tenants.get_mut(&tenant).expect("tenant");
            if q.paused_until.is_none() {
                q.not_before = Some(now + wait);
            }
            for item in items.into_iter().rev() {
                q.bytes += item.bytes;
                self.queued_bytes += item.bytes;
                q.items.push_front(item);
            }
            if !self.rr.contains(&tenant) {
                self.rr.push_back(tenant);
            }
        }
        if progressed {
            self.status
                .last_progress_ms
                .store(Timestamp::now().as_millis(), Ordering::Relaxed);
        }
    }

    /// The first position not yet settled.
    fn checkpoint_position(&self) -> WalPosition {
        let mut cp = self.cursor;
        if let Some((p, _)) = self.inflight.iter().find(|(_, (_, s))| *s == Slot::Pending) {
            cp = cp.min(*p);
        }
        for q in self.tenants.values() {
            if let Some(l) = q.lagging_from {
                cp = cp.min(l);
            }
        }
        cp
    }

    async fn maybe_checkpoint(&mut self, force: bool) {
        let interval = Duration::from_millis(self.config.checkpoint_interval_ms);
        if !force && self.last_save.elapsed() < interval {
            return;
        }
        self.last_save = Instant::now();
        let cp = self.checkpoint_position();
        // Move everything before the checkpoint into the settled counters.
        while let Some(entry) = self.inflight.first_entry() {
            if *entry.key() >= cp {
                break;
            }
            let (_, (tenant, slot)) = entry.remove_entry();
            let s = self.settled.entry(tenant).or_default();
            match slot {
                Slot::Indexed => s.indexed += 1,
                Slot::DeadLettered => s.dead_lettered += 1,
                Slot::Pending => unreachable!("checkpoint never passes a pending record"),
            }
        }
        let rejected = self.deps.ledger.snapshot();
        for (t, c) in rejected {
            self.settled.entry(t).or_default().rejected = c.rejected;
        }
        if cp == self.saved && !force {
            return;
        }
        let state = SavedState {
            tenants: self.settled.clone(),
        };
        let checkpoint = Checkpoint {
            position: cp,
            state: serde_json::to_value(&state).expect("state serializes"),
        };
        let wal = self.deps.wal.clone();
        match tokio::task::spawn_blocking(move || wal.save_checkpoint(&checkpoint)).await {
            Ok(Ok(())) => {
                self.saved = cp;
                self.status
                    .checkpoint_segment
                    .store(cp.segment, Ordering::Relaxed);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "checkpoint save failed"),
            Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
        }
    }

    /// Archives and deletes sealed segments wholly before the saved checkpoint.
    fn archive_task(&self) -> Option<tokio::task::JoinHandle<()>> {
        let saved = self.saved;
        let segments: Vec<u64> = self
            .deps
            .wal
            .sealed_segments()
            .into_iter()
            .filter(|s| *s < saved.segment)
            .collect();
        if segments.is_empty() {
            return None;
        }
        let wal = self.deps.wal.clone();
        let archive = self.deps.archive.clone();
        let status = self.status.clone();
        let prefix = self.config.archive_prefix.clone();
        let node = self.node.clone();
        Some(tokio::spawn(async move {
            for seg in segments {
                let Ok(key) = archive_key(&prefix, &node, seg) else {
                    return;
                };
                let w = wal.clone();
                let bytes = match tokio::task::spawn_blocking(move || w.segment_bytes(seg)).await {
                    Ok(Ok(b)) => b,
                    _ => return,
                };
                if let Err(e) = archive.put_bytes(&key, Bytes::from(bytes)).await {
                    status.archive_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(segment = seg, error = %e, "segment archive failed, kept on disk");
                    return;
                }
                let w = wal.clone();
                match tokio::task::spawn_blocking(move || w.delete_segment(seg)).await {
                    Ok(Ok(())) => {
                        status.archived_segments.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => return,
                }
            }
        }))
    }
}

/// The blob key of an archived segment: `<prefix>/<node token>/<segment hex>.wal`.
pub fn archive_key(prefix: &str, node: &NodeToken, segment: u64) -> Result<BlobKey> {
    Ok(BlobKey::parse(&format!(
        "{prefix}/{}/{segment:016x}.wal",
        node.as_str()
    ))?)
}

async fn ship_batch(
    index: Arc<dyn LogIndex>,
    dlq: Arc<dyn DocumentStore>,
    items: Vec<Item>,
) -> BatchDone {
    let records: Vec<LogRecord> = items.iter().map(|i| i.record.clone()).collect();
    let results = match index.bulk(&records).await {
        Ok(outcomes) if outcomes.len() == records.len() => {
            let mut results = Vec::with_capacity(records.len());
            for (record, outcome) in records.iter().zip(outcomes) {
                results.push(match outcome {
                    BulkOutcome::Created | BulkOutcome::AlreadyExists => ItemResult::Delivered,
                    BulkOutcome::Retryable { .. } => ItemResult::Retry,
                    BulkOutcome::Rejected { status, reason } if status == 401 || status == 403 => {
                        ItemResult::AuthPaused(format!("{status}: {reason}"))
                    }
                    BulkOutcome::Rejected { status, reason } => {
                        match dead_letter(&*dlq, record, status, &reason).await {
                            Ok(()) => ItemResult::DeadLettered,
                            Err(e) => {
                                tracing::warn!(error = %e, "dead-letter write failed, will retry");
                                ItemResult::Retry
                            }
                        }
                    }
                });
            }
            results
        }
        Ok(outcomes) => {
            tracing::error!(
                sent = records.len(),
                got = outcomes.len(),
                "bulk outcome count mismatch; retrying the batch"
            );
            records.iter().map(|_| ItemResult::Retry).collect()
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            let reason = e.to_string();
            records
                .iter()
                .map(|_| ItemResult::AuthPaused(reason.clone()))
                .collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, records = records.len(), "bulk failed, retrying its records");
            records.iter().map(|_| ItemResult::Retry).collect()
        }
    };
    BatchDone { items, results }
}

fn dead_letter_collection() -> CollectionName {
    CollectionName::parse(DEAD_LETTERS).expect("literal collection name")
}

async fn dead_letter(
    store: &dyn DocumentStore,
    record: &LogRecord,
    status: u16,
    reason: &str,
) -> Result<()> {
    let id = DocumentId::parse(record.id.as_str())?;
    let letter = DeadLetter {
        tenant: record.tenant.clone(),
        record: record.clone(),
        status,
        reason: reason.to_owned(),
        at: Timestamp::now(),
    };
    let body = DocumentBody::from_serialize(&letter)?;
    match store.insert(&dead_letter_collection(), &id, &body).await {
        Ok(_) => Ok(()),
        // A re-shipped record refused again: it is already kept.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A tenant's dead letters (oldest id first).
pub async fn list_dead_letters(
    store: &dyn DocumentStore,
    tenant: &TenantId,
) -> Result<Vec<DeadLetter>> {
    let query = DocQuery {
        filters: vec![FieldFilter {
            path: FieldPath::parse("tenant")?,
            value: Scalar::String(tenant.to_string()),
        }],
        ..DocQuery::default()
    };
    store
        .find_all(&dead_letter_collection(), &query)
        .await?
        .into_iter()
        .map(|d| d.body.to_typed())
        .collect()
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records read.
    pub records: u64,
    /// Records now in the index (created or already there).
    pub delivered: u64,
    /// Records the index still refuses.
    pub refused: u64,
}

async fn bulk_with_retry(index: &dyn LogIndex, records: &[LogRecord]) -> Result<Vec<BulkOutcome>> {
    let mut pending: Vec<usize> = (0..records.len()).collect();
    let mut out: Vec<Option<BulkOutcome>> = vec![None; records.len()];
    let mut wait = Duration::from_millis(100);
    for _ in 0..20 {
        let batch: Vec<LogRecord> = pending.iter().map(|i| records[*i].clone()).collect();
        match index.bulk(&batch).await {
            Ok(outcomes) => {
                let mut again = Vec::new();
                for (i, o) in pending.iter().zip(outcomes) {
                    if matches!(o, BulkOutcome::Retryable { .. }) {
                        again.push(*i);
                    } else {
                        out[*i] = Some(o);
                    }
                }
                pending = again;
            }
            Err(e) if e.is_transient() => {}
            Err(e) => return Err(e),
        }
        if pending.is_empty() {
            return Ok(out.into_iter().map(|o| o.expect("settled")).collect());
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    Err(Error::unavailable(
        "index kept refusing records transiently",
    ))
}

/// Sends a tenant's dead letters to the index again (after the mapping was fixed); delivered
/// ones leave the store and move from dead-lettered to indexed in the ledger.
pub async fn replay_dead_letters(
    store: &dyn DocumentStore,
    index: &dyn LogIndex,
    ledger: &Ledger,
    tenant: &TenantId,
) -> Result<ReplayReport> {
    let letters = list_dead_letters(store, tenant).await?;
    let mut report = ReplayReport::default();
    for chunk in letters.chunks(500) {
        let records: Vec<LogRecord> = chunk.iter().map(|l| l.record.clone()).collect();
        let outcomes = bulk_with_retry(index, &records).await?;
        for (r, o) in records.iter().zip(outcomes) {
            report.records += 1;
            if o.is_delivered() {
                store
                    .delete(
                        &dead_letter_collection(),
                        &DocumentId::parse(r.id.as_str())?,
                    )
                    .await?;
                ledger.update(tenant, |c| {
                    c.dead_lettered = c.dead_lettered.saturating_sub(1);
                    c.indexed += 1;
                });
                report.delivered += 1;
            } else {
                report.refused += 1;
            }
        }
    }
    Ok(report)
}

/// Rebuilds the index from archived segments under `prefix`: every record is sent again with
/// its original id, so records still in the index are 409s and missing ones are created.
pub async fn replay_archive(
    archive: &dyn BlobStore,
    prefix: &str,
    index: &dyn LogIndex,
) -> Result<ReplayReport> {
    let list_prefix = ion_core::BlobPrefix::parse(&format!("{prefix}/"))?;
    let mut report = ReplayReport::default();
    for meta in archive.list_all(&list_prefix).await? {
        let key = meta.key.as_str();
        let mut parts = key.rsplit('/');
        let (Some(_file), Some(node)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(node) = NodeToken::parse(node) else {
            tracing::warn!(key, "archived object without a node token, skipped");
            continue;
        };
        let bytes = archive.get_bytes(&meta.key, 1 << 30).await?;
        let header = codec::decode_segment_header(&bytes)
            .map_err(|e| Error::corrupt(format!("archived segment {key}: {e}")))?;
        let scan = codec::scan_frames(&bytes, SEGMENT_HEADER_LEN);
        let mut records = Vec::new();
        for (off, range) in scan.frames {
            if let Some(entry) = WalEntry::decode(&bytes[range]) {
                let id = record_id(&entry.tenant, &node, header.segment, off as u64);
                records.push(entry.into_record(id));
            }
        }
        for chunk in records.chunks(1000) {
            let outcomes = bulk_with_retry(index, chunk).await?;
            for o in outcomes {
                report.records += 1;
                if o.is_delivered() {
                    report.delivered += 1;
                } else {
                    report.refused += 1;
                }
            }
        }
    }
    Ok(report)
}
