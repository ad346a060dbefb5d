//! The reconciler: executes a plan against `Compute` and records every decision in an audit log.
//!
//! Launches and terminations run with bounded concurrency. Every launch carries the plan's
//! idempotency key, so a launch retried after a lost response makes no second instance. Only
//! transient errors are retried (exponential back-off on tokio time); a zone-scoped
//! `Unavailable` is not retried in that zone but reported so the planner avoids the zone.
//! The audit log is an outbox: events are written to the `audit_events` collection of the
//! `DocumentStore`; what cannot be written now stays queued and is written by a later flush,
//! never dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::compute::{Compute, LaunchRequest};
use crate::control::planner::{
    ActionKind, DeferReason, Launch, LaunchReason, Plan, Termination, TerminationReason,
};
use crate::document::{DocQuery, DocumentBody, DocumentStore, DocumentStoreExt};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Instance, Sha256Digest, Version};
use crate::name::{AppId, CollectionName, DocumentId, InstanceId, TenantId, Zone};
use crate::time::Timestamp;

/// The collection audit events are stored in.
pub const AUDIT_COLLECTION: &str = "audit_events";

/// What happened (or was decided not to happen), with its reason.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditKind {
    /// An instance was launched.
    Launched {
        /// The instance.
        instance: InstanceId,
        /// Its zone.
        zone: Zone,
        /// Its version.
        version: Version,
        /// Its slot.
        slot: u32,
        /// Why.
        reason: LaunchReason,
    },
    /// A planned launch failed.
    LaunchFailed {
        /// Its zone.
        zone: Zone,
        /// Why it was wanted.
        reason: LaunchReason,
        /// What went wrong.
        error: String,
    },
    /// An instance was terminated.
    Terminated {
        /// The instance.
        instance: InstanceId,
        /// Why.
        reason: TerminationReason,
    },
    /// A planned termination failed.
    TerminateFailed {
        /// The instance.
        instance: InstanceId,
        /// What went wrong.
        error: String,
    },
    /// An action was not taken.
    Deferred {
        /// Which action.
        action: ActionKind,
        /// How many.
        count: u32,
        /// Why not.
        reason: DeferReason,
    },
    /// An instance crashed (or failed liveness).
    Crashed {
        /// The instance.
        instance: InstanceId,
        /// Consecutive crashes of its slot.
        crashes: u32,
    },
    /// A route table went live.
    RoutesApplied {
        /// Its generation.
        generation: u64,
        /// Its checksum.
        checksum: Sha256Digest,
    },
    /// Applying a route table failed (retried next pass).
    RoutesFailed {
        /// What went wrong.
        error: String,
    },
    /// Desired state of an app changed (deploy, scale, undeploy, rollback, autoscale).
    DesiredChanged {
        /// The new version, if deployed.
        version: Option<Version>,
        /// The new replica count, if deployed.
        replicas: Option<u32>,
        /// Why, in words.
        why: String,
    },
    /// Anything else the control plane decided, in words.
    Note {
        /// The decision.
        what: String,
    },
}

/// One audit log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When.
    pub at: Timestamp,
    /// The control-plane pass it belongs to.
    pub pass: u64,
    /// Owner, when about one app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// App, when about one app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppId>,
    /// What.
    pub kind: AuditKind,
}

/// An outbox of audit events written to a `DocumentStore`.
#[derive(Debug)]
pub struct AuditLog {
    docs: Arc<dyn DocumentStore>,
    collection: CollectionName,
    outbox: Mutex<VecDeque<(DocumentId, AuditEvent)>>,
    seq: AtomicU64,
    run: String,
}

impl AuditLog {
    /// A log writing to `audit_events` in `docs`. Ids are `<run>-<random>-<seq>`: `run` (e.g.
    /// the start time in milliseconds) sorts runs, the random part keeps two control planes
    /// started in the same millisecond from overwriting each other.
    pub fn new(docs: Arc<dyn DocumentStore>, run: u64) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(run);
        let salt = h.finish() as u32;
        Self {
            docs,
            collection: CollectionName::parse(AUDIT_COLLECTION).expect("valid collection name"),
            outbox: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            run: format!("{run:013}-{salt:08x}"),
        }
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, VecDeque<(DocumentId, AuditEvent)>> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an event (ids sort in recording order).
    pub fn record(&self, event: AuditEvent) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = DocumentId::parse(&format!("{}-{seq:010}", self.run))
            .expect("audit ids are valid document ids");
        tracing::debug!(id = %id, event = ?event.kind, "audit");
        self.outbox().push_back((id, event));
    }

    /// Events not yet written.
    pub fn pending(&self) -> usize {
        self.outbox().len()
    }

    /// Writes queued events in order; stops at the first failure and keeps the rest queued.
    /// An event already stored (a retry after a lost response) counts as written.
    pub async fn flush(&self) -> Result<usize> {
        let mut written = 0;
        loop {
            let Some((id, event)) = self.outbox().front().cloned() else {
                return Ok(written);
            };
            let body = DocumentBody::from_serialize(&event)?;
            match self.docs.insert(&self.collection, &id, &body).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            self.outbox().pop_front();
            written += 1;
        }
    }

    /// Every stored event, oldest first.
    pub async fn read_all(&self) -> Result<Vec<AuditEvent>> {
        let docs = self
            .docs
            .find_all(&self.collection, &DocQuery::default())
            .await?;
        docs.iter().map(|d| d.body.to_typed()).collect()
    }
}

/// How transient errors are retried within one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per call, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub base: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base: Duration::from_millis(200),
        }
    }
}

/// Retries `op` while it fails transiently (and not zone-scoped), up to the policy's attempts.
pub async fn with_retry<T, F, Fut>(policy: RetryPolicy, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut wait = policy.base;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && e.zone().is_none() && attempt < policy.attempts => {
                let pause = e.retry_after().unwrap_or(wait).min(Duration::from_secs(30));
                tokio::time::sleep(pause).await;
                wait = wait.saturating_mul(2);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What executing a plan did.
#[derive(Debug, Default)]
pub struct Execution {
    /// Launches that returned an instance.
    pub launched: Vec<(Launch, Instance)>,
    /// Launches that failed, with the error.
    pub failed_launches: Vec<(Launch, Error)>,
    /// Terminations that succeeded.
    pub terminated: Vec<Termination>,
    /// Terminations that failed, with the error.
    pub failed_terminations: Vec<(Termination, Error)>,
}

/// Executes plans against a compute backend.
#[derive(Debug)]
pub struct Reconciler {
    compute: Arc<dyn Compute>,
    concurrency: usize,
    retry: RetryPolicy,
}

impl Reconciler {
    /// A reconciler running at most `concurrency` calls at once.
    pub fn new(compute: Arc<dyn Compute>, concurrency: usize, retry: RetryPolicy) -> Self {
        Self {
            compute,
            concurrency: concurrency.max(1),
            retry,
        }
    }

    /// Executes `plan`: terminations first (they free quota and zone room), then launches;
    /// records each outcome in `audit` under `pass`.
    pub async fn execute(
        &self,
        plan: &Plan,
        audit: &AuditLog,
        pass: u64,
        now: Timestamp,
    ) -> Execution {
        let mut out = Execution::default();
        let ev = |tenant: &TenantId, app: &AppId, kind| AuditEvent {
            at: now,
            pass,
            tenant: Some(tenant.clone()),
            app: Some(app.clone()),
            kind,
        };
        for c in &plan.crashes {
            audit.record(ev(
                &c.tenant,
                &c.app,
                AuditKind::Crashed {
                    instance: c.instance.clone(),
                    crashes: c.crashes,
                },
            ));
        }
        let retry = self.retry;
        // Each call is an owned future (no borrowing closure inside the stream), so the pass
        // future stays `Send` for `tokio::spawn(platform.run(..))`.
        let calls: Vec<_> = plan
            .terminations
            .iter()
            .map(|t| {
                let compute = self.compute.clone();
                let t = t.clone();
                async move {
                    let r = with_retry(retry, || compute.terminate(&t.instance)).await;
                    (t, r)
                }
            })
            .collect();
        let results: Vec<(Termination, Result<()>)> = stream::iter(calls)
            .buffered(self.concurrency)
            .collect()
            .await;
        for (t, r) in results {
            match r {
                Ok(()) => {
                    audit.record(ev(
                        &t.tenant,
                        &t.app,
                        AuditKind::Terminated {
                            instance: t.instance.clone(),
                            reason: t.reason,
                        },
                    ));
                    out.terminated.push(t);
                }
                Err(e) => {
                    audit.record(ev(
                        &t.tenant,
                        &t.app,
                        AuditKind::TerminateFailed {
                            instance: t.instance.clone(),
                            error: e.to_string(),
                        },
                    ));
                    out.failed_terminations.push((t, e));
                }
            }
        }
        let calls: Vec<_> = plan
            .launches
            .iter()
            .map(|l| {
                let compute = self.compute.clone();
                let l = l.clone();
                async move {
                    let request = LaunchRequest {
                        idempotency_key: l.idempotency_key.clone(),
                        zone: l.zone.clone(),
                        tenant: l.tenant.clone(),
                        app: l.app.clone(),
                        version: l.version,
                        artifact: l.artifact.clone(),
                        port: l.port,
                    };
                    let r = with_retry(retry, || compute.launch(request.clone())).await;
                    (l, r)
                }
            })
            .collect();
        let results: Vec<(Launch, Result<Instance>)> = stream::iter(calls)
            .buffered(self.concurrency)
            .collect()
            .await;
        for (l, r) in results {
            match r {
                Ok(instance) => {
                    audit.record(ev(
                        &l.tenant,
                        &l.app,
                        AuditKind::Launched {
                            instance: instance.id.clone(),
                            zone: instance.zone.clone(),
                            version: l.version,
                            slot: l.slot,
                            reason: l.reason,
                        },
                    ));
                    out.launched.push((l, instance));
                }
                Err(e) => {
                    tracing::warn!(tenant = %l.tenant, app = %l.app, zone = %l.zone, error = %e, "launch failed");
                    audit.record(ev(
                        &l.tenant,
                        &l.app,
                        AuditKind::LaunchFailed {
                            zone: l.zone.clone(),
                            reason: l.reason,
                            error: e.to_string(),
                        },
                    ));
                    out.failed_launches.push((l, e));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{InMemoryCompute, InMemoryDocumentStore};

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_only() {
        let mut calls = 0;
        let r: Result<()> = with_retry(RetryPolicy::default(), || {
            calls += 1;
            async { Err(Error::rate_limited("slow down")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: Result<()> = with_retry(RetryPolicy::default(), || {
            calls += 1;
            async { Err(Error::invalid_input("bad")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let zone = Zone::parse("zone-a").unwrap();
        let r: Result<()> = with_retry(RetryPolicy::default(), || {
            calls += 1;
            let zone = zone.clone();
            async move { Err(Error::unavailable("full").with_zone(zone)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "zone-scoped errors go back to the planner");
    }

    #[tokio::test]
    async fn audit_outbox_survives_store_failures() {
        let docs = InMemoryDocumentStore::new();
        let log = AuditLog::new(Arc::new(docs.clone()), 1);
        for i in 0..3 {
            log.record(AuditEvent {
                at: Timestamp::from_millis(i),
                pass: 1,
                tenant: None,
                app: None,
                kind: AuditKind::Note {
                    what: format!("event {i}"),
                },
            });
        }
        docs.faults().fail_next(1, ErrorKind::Unavailable);
        assert!(log.flush().await.is_err());
        assert_eq!(log.pending(), 3);
        assert_eq!(log.flush().await.unwrap(), 3);
        let stored = log.read_all().await.unwrap();
        let whats: Vec<_> = stored
            .iter()
            .map(|e| match &e.kind {
                AuditKind::Note { what } => what.clone(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(whats, ["event 0", "event 1", "event 2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_launch_retried_after_a_lost_response_makes_one_instance() {
        let compute = InMemoryCompute::default();
        let launch = Launch {
            tenant: TenantId::parse("acme").unwrap(),
            app: AppId::parse("web").unwrap(),
            version: Version(1),
            slot: 0,
            attempt: 0,
            zone: Zone::parse("zone-a").unwrap(),
            idempotency_key: crate::control::planner::launch_key(
                &TenantId::parse("acme").unwrap(),
                &AppId::parse("web").unwrap(),
                Version(1),
                0,
                0,
            ),
            reason: LaunchReason::BelowDesired,
            artifact: crate::model::ArtifactRef {
                id: crate::name::ArtifactId::parse("a1").unwrap(),
                sha256: Sha256Digest::of(b"x"),
                length: 1,
            },
            port: 8080,
        };
        let plan = Plan {
            launches: vec![launch],
            ..Plan::default()
        };
        let docs = Arc::new(InMemoryDocumentStore::new());
        let audit = AuditLog::new(docs, 1);
        let r = Reconciler::new(Arc::new(compute.clone()), 4, RetryPolicy::default());
        let a = r.execute(&plan, &audit, 1, Timestamp::EPOCH).await;
        // The same plan again (as after a lost response): same key, same instance.
        let b = r.execute(&plan, &audit, 2, Timestamp::EPOCH).await;
        assert_eq!(a.launched[0].1.id, b.launched[0].1.id);
        assert_eq!(compute.launch_count(), 1);
    }
}
