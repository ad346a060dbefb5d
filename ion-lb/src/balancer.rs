//! `NginxLoadBalancer`: applies route tables to one nginx master, confirms every reload through
//! the marker, rolls back what does not take, and coalesces bursts into one reload.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use ion_core::{Error, LiveGeneration, LoadBalancer, Result, RouteTable, Sha256Digest};
use tokio::sync::{oneshot, Mutex};

use crate::config::NginxConfig;
use crate::dynamic::{self, ControlSecret};
use crate::files::{io_error, swap_symlink, write_atomic};
use crate::marker;
use crate::process::{scratch_prefix, NginxProcess, BOOTSTRAP_FILE};
use crate::render::{render_with, Rendered};

/// Counters of what the balancer did, for tests, examples and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Reloads signalled and confirmed.
    pub reloads: u64,
    /// Applies that changed nothing in nginx (identical render).
    pub unchanged: u64,
    /// Reloads that did not take and were rolled back.
    pub rollbacks: u64,
    /// Apply requests merged into another one's reload.
    pub coalesced: u64,
    /// Upstream membership changes pushed without a reload (dynamic upstreams).
    pub pushes: u64,
}

/// Drives one nginx master as a [`LoadBalancer`].
///
/// `apply` renders the table (refusing invalid input before touching anything), writes the
/// certificates (0600) and the candidate configuration atomically, optionally runs `nginx -t` on
/// it against a scratch prefix, points `conf/nginx.conf` at it, sends SIGHUP and waits until the
/// marker serves the candidate's hash. If it does not within the deadline (the master rejected
/// it: a port conflict, a shared-memory clash), the previous file is restored, the master is
/// signalled again, and `apply` fails with `Unavailable`; `live` still reports the old table.
///
/// Concurrent applies queue behind one pipeline; when a reload finishes, only the newest queued
/// table is applied and every waiter whose table it supersedes gets its outcome. An identical
/// render (for instance the same routes under a new generation) changes no file and sends no
/// signal.
#[derive(Clone)]
pub struct NginxLoadBalancer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NginxLoadBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NginxLoadBalancer")
            .field("prefix", &self.inner.config.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: NginxConfig,
    secret: ControlSecret,
    process: StdMutex<Option<Arc<NginxProcess>>>,
    status: StdMutex<Status>,
    pending: StdMutex<Option<Pending>>,
    pipeline: Mutex<Pipeline>,
}

#[derive(Default)]
struct Status {
    live: Option<LiveGeneration>,
    stats: ApplyStats,
}

struct Pending {
    table: RouteTable,
    rendered: Rendered,
    waiters: Vec<oneshot::Sender<Result<LiveGeneration>>>,
    first: Instant,
    last: Instant,
}

struct Pipeline {
    live_hash: String,
    live_membership: String,
    live_membership_hash: String,
    live_file: PathBuf,
    bucket: TokenBucket,
}

impl NginxLoadBalancer {
    /// Starts a dedicated nginx master for `config` and drives it.
    pub async fn start(config: NginxConfig) -> Result<Self> {
        let process = NginxProcess::start(&config).await?;
        let hash = process.bootstrap_hash().to_string();
        let live_file = config.conf_dir().join(BOOTSTRAP_FILE);
        Self::with_process(config, process, hash, live_file)
    }

    /// Drives a master that is already running with `config`'s prefix.
    pub async fn attach(config: NginxConfig) -> Result<Self> {
        let process = NginxProcess::attach(&config)?;
        let hash = marker::read_marker(config.marker_listen, Duration::from_secs(2)).await?;
        let live_file = fs::read_link(config.conf_path())
            .map_err(|e| io_error("read the live configuration link", e))?;
        Self::with_process(config, process, hash, live_file)
    }

    fn with_process(
        config: NginxConfig,
        process: NginxProcess,
        live_hash: String,
        live_file: PathBuf,
    ) -> Result<Self> {
        let bucket = TokenBucket::new(config.reloads_per_sec, config.reload_burst);
        let secret = ControlSecret::load_or_create(&config.secret_path())?;
        Ok(Self {
            inner: Arc::new(Inner {
                secret,
                process: StdMutex::new(Some(Arc::new(process))),
                status: StdMutex::new(Status::default()),
                pending: StdMutex::new(None),
                pipeline: Mutex::new(Pipeline {
                    live_hash,
                    live_membership: String::new(),
                    live_membership_hash: Sha256Digest::of(b"").to_string(),
                    live_file,
                    bucket,
                }),
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NginxConfig {
        &self.inner.config
    }

    /// What the balancer has done so far.
    pub fn stats(&self) -> ApplyStats {
        self.inner.status.lock().expect("status lock").stats
    }

    /// Stops the master if ion started it.
    pub async fn shutdown(&self) -> Result<()> {
        let process = self.inner.process.lock().expect("process lock").take();
        match process.map(Arc::try_unwrap) {
            Some(Ok(p)) => p.stop().await,
            // An apply still holds it; it stops when the last holder lets go.
            Some(Err(_)) | None => Ok(()),
        }
    }

    /// Signals the master, waits for the marker to serve `hash`, then for the workers of the
    /// previous generation to stop accepting, so a request sent after this returns meets the new
    /// configuration.
    async fn reload_and_confirm(&self, hash: &str) -> Result<()> {
        let config = &self.inner.config;
        let start = Instant::now();
        let process = self
            .inner
            .process
            .lock()
            .expect("process lock")
            .clone()
            .ok_or_else(|| Error::unavailable("nginx was shut down"))?;
        let old = process.accepting_workers().unwrap_or_default();
        process.reload()?;
        marker::wait_for(config.marker_listen, hash, config.confirm_timeout()).await?;
        let left = config.confirm_timeout().saturating_sub(start.elapsed());
        let retired = process.wait_workers_retired(&old, left).await;
        if !retired {
            tracing::warn!(workers = ?old, "old nginx workers still accept connections after the deadline");
        }
        Ok(())
    }

    fn check_generation(&self, table: &RouteTable) -> Result<Option<LiveGeneration>> {
        let status = self.inner.status.lock().expect("status lock");
        if let Some(live) = status.live {
            if table.generation() < live.generation {
                return Err(Error::conflict(format!(
                    "generation {} is older than the live generation {}",
                    table.generation(),
                    live.generation
                )));
            }
            if table.generation() == live.generation {
                if table.checksum() == live.checksum {
                    return Ok(Some(live));
                }
                return Err(Error::conflict(format!(
                    "generation {} is live with different content",
                    live.generation
                )));
            }
        }
        Ok(None)
    }

    /// One pipeline run: the newest pending table becomes live, or nothing changes.
    async fn run(&self, pipeline: &mut Pipeline) {
        let config = &self.inner.config;
        // Debounce: let a burst settle, but never beyond max_delay.
        loop {
            let wait = {
                let pending = self.inner.pending.lock().expect("pending lock");
                let Some(p) = pending.as_ref() else { return };
                let quiet = Duration::from_millis(config.min_quiet_ms);
                let cap = p.first + Duration::from_millis(config.max_delay_ms);
                let until = (p.last + quiet).min(cap);
                until.checked_duration_since(Instant::now())
            };
            match wait {
                Some(d) if !d.is_zero() => tokio::time::sleep(d).await,
                _ => break,
            }
        }
        let needs_reload = {
            let pending = self.inner.pending.lock().expect("pending lock");
            pending
                .as_ref()
                .is_some_and(|p| p.rendered.hash.to_string() != pipeline.live_hash)
        };
        if needs_reload {
            // Waiting for a token lets more changes pile into the same reload.
            pipeline.bucket.take().await;
        }
        let Some(p) = self.inner.pending.lock().expect("pending lock").take() else {
            return;
        };
        let outcome = match self.check_generation(&p.table) {
            Ok(Some(live)) => Ok(live),
            Err(e) => Err(e),
            Ok(None) => self.make_live(pipeline, &p.table, &p.rendered).await,
        };
        let merged = p.waiters.len().saturating_sub(1) as u64;
        self.inner
            .status
            .lock()
            .expect("status lock")
            .stats
            .coalesced += merged;
        for w in p.waiters {
            let _ = w.send(clone_outcome(&outcome));
        }
    }

    async fn make_live(
        &self,
        pipeline: &mut Pipeline,
        table: &RouteTable,
        rendered: &Rendered,
    ) -> Result<LiveGeneration> {
        let config = &self.inner.config;
        let live = LiveGeneration {
            generation: table.generation(),
            checksum: table.checksum(),
        };
        let hash = rendered.hash.to_string();
        let membership_changed = config.lua_modules_dir.is_some()
            && rendered.membership_hash != pipeline.live_membership_hash;
        if hash == pipeline.live_hash && !membership_changed {
            let mut status = self.inner.status.lock().expect("status lock");
            status.live = Some(live);
            status.stats.unchanged += 1;
            return Ok(live);
        }
        let previous_membership = (
            pipeline.live_membership.clone(),
            pipeline.live_membership_hash.clone(),
        );
        if membership_changed {
            // Pushed before any reload, so a route the new configuration adds finds its peers.
            if let Err(e) = self
                .push(&rendered.membership, &rendered.membership_hash)
                .await
            {
                let _ = self
                    .push(&previous_membership.0, &previous_membership.1)
                    .await;
                return Err(e);
            }
            pipeline.live_membership = rendered.membership.clone();
            pipeline.live_membership_hash = rendered.membership_hash.clone();
            if hash == pipeline.live_hash {
                let mut status = self.inner.status.lock().expect("status lock");
                status.live = Some(live);
                status.stats.pushes += 1;
                return Ok(live);
            }
        }
        let started = Instant::now();
        for cert in &rendered.certs {
            write_atomic(&cert.chain_path, cert.chain_pem.as_bytes(), 0o600)?;
            write_atomic(&cert.key_path, cert.key_pem.as_bytes(), 0o600)?;
        }
        let candidate = config.conf_dir().join(format!(
            "gen-{:020}-{}.conf",
            table.generation(),
            &hash[..16]
        ));
        write_atomic(&candidate, rendered.text.as_bytes(), 0o600)?;
        if config.check_with_nginx_t {
            if let Err(e) = self.nginx_t(&candidate).await {
                let _ = fs::remove_file(&candidate);
                return Err(e);
            }
        }
        swap_symlink(&config.conf_path(), &candidate)?;
        let confirmed = self.reload_and_confirm(&hash).await;
        match confirmed {
            Ok(_) => {
                pipeline.live_hash = hash;
                pipeline.live_file = candidate;
                {
                    let mut status = self.inner.status.lock().expect("status lock");
                    status.live = Some(live);
                    status.stats.reloads += 1;
                }
                tracing::info!(
                    generation = table.generation(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "nginx serves the new generation"
                );
                if let Err(e) = self.prune(pipeline) {
                    tracing::warn!(error = %e, "pruning old generations failed");
                }
                Ok(live)
            }
            Err(e) => {
                tracing::error!(generation = table.generation(), error = %e, "reload did not take; rolling back");
                let _ = fs::rename(&candidate, candidate.with_extension("rejected"));
                swap_symlink(&config.conf_path(), &pipeline.live_file)?;
                let restored = self.reload_and_confirm(&pipeline.live_hash).await;
                if membership_changed {
                    let (m, h) = previous_membership;
                    if let Err(pe) = self.push(&m, &h).await {
                        tracing::error!(error = %pe, "restoring the upstream membership failed");
                    }
                    pipeline.live_membership = m;
                    pipeline.live_membership_hash = h;
                }
                self.inner
                    .status
                    .lock()
                    .expect("status lock")
                    .stats
                    .rollbacks += 1;
                let tail = self.error_log_tail();
                Err(match restored {
                    Ok(_) => Error::unavailable(format!(
                        "nginx did not take generation {}; the previous configuration is restored and serving: {e}; nginx said: {tail}",
                        table.generation()
                    )),
                    Err(r) => Error::unavailable(format!(
                        "nginx did not take generation {} ({e}) and the restore is not confirmed either ({r}); nginx said: {tail}",
                        table.generation()
                    )),
                })
            }
        }
    }

    async fn push(&self, membership: &str, hash: &str) -> Result<()> {
        let body = format!("{hash}\n{membership}");
        dynamic::push(
            self.inner.config.marker_listen,
            &self.inner.secret,
            &body,
            hash,
        )
        .await
    }

    /// `nginx -t` against the scratch prefix: defence in depth, never the security boundary.
    async fn nginx_t(&self, candidate: &std::path::Path) -> Result<()> {
        let config = &self.inner.config;
        let mut cmd = Command::new(&config.nginx_bin);
        cmd.arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(scratch_prefix(config))
            .arg("-c")
            .arg(candidate);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| Error::unexpected(format!("nginx -t task: {e}")))?
            .map_err(|e| io_error("run nginx -t", e))?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::invalid_input(format!(
            "nginx -t refused the candidate: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    fn error_log_tail(&self) -> String {
        fs::read_to_string(self.inner.config.prefix.join("logs/error.log"))
            .map(|t| {
                t.lines()
                    .rev()
                    .find(|l| l.contains("[emerg]") || l.contains("[alert]"))
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// Keeps the newest `keep_generations` configuration files (and the live one), and the
    /// certificates those files name.
    fn prune(&self, pipeline: &Pipeline) -> Result<()> {
        let config = &self.inner.config;
        let mut gens: Vec<PathBuf> = fs::read_dir(config.conf_dir())
            .map_err(|e| io_error("list generations", e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("gen-"))
            })
            .collect();
        gens.sort();
        let drop_count = gens.len().saturating_sub(config.keep_generations);
        let mut kept = Vec::new();
        for (i, g) in gens.into_iter().enumerate() {
            if i < drop_count && g != pipeline.live_file {
                let _ = fs::remove_file(&g);
            } else {
                kept.push(g);
            }
        }
        let mut referenced = BTreeSet::new();
        for g in &kept {
            if let Ok(text) = fs::read_to_string(g) {
                referenced.insert(text);
            }
        }
        for entry in fs::read_dir(config.certs_dir()).map_err(|e| io_error("list certs", e))? {
            let path = entry.map_err(|e| io_error("list certs", e))?.path();
            let Some(p) = path.to_str() else { continue };
            if !referenced.iter().any(|t| t.contains(p)) {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl LoadBalancer for NginxLoadBalancer {
    async fn apply(&self, table: &RouteTable) -> Result<LiveGeneration> {
        if let Some(live) = self.check_generation(table)? {
            return Ok(live);
        }
        // Render before queueing, so invalid input fails alone and touches nothing.
        let rendered = render_with(
            table,
            &self.inner.config,
            SystemTime::now(),
            Some(&self.inner.secret),
        )?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.inner.pending.lock().expect("pending lock");
            let now = Instant::now();
            match pending.as_mut() {
                Some(p) if p.table.generation() > table.generation() => {
                    return Err(Error::conflict(format!(
                        "generation {} is older than the queued generation {}",
                        table.generation(),
                        p.table.generation()
                    )));
                }
                Some(p) if p.table.generation() == table.generation() => {
                    if p.table.checksum() != table.checksum() {
                        return Err(Error::conflict(format!(
                            "generation {} is queued with different content",
                            table.generation()
                        )));
                    }
                    p.waiters.push(tx);
                }
                Some(p) => {
                    p.table = table.clone();
                    p.rendered = rendered;
                    p.waiters.push(tx);
                    p.last = now;
                }
                None => {
                    *pending = Some(Pending {
                        table: table.clone(),
                        rendered,
                        waiters: vec![tx],
                        first: now,
                        last: now,
                    });
                }
            }
        }
        {
            let mut pipeline = self.inner.pipeline.lock().await;
            self.run(&mut pipeline).await;
        }
        rx.await
            .map_err(|_| Error::unexpected("apply pipeline dropped the request"))?
    }

    async fn live(&self) -> Result<Option<LiveGeneration>> {
        Ok(self.inner.status.lock().expect("status lock").live)
    }
}

fn clone_outcome(o: &Result<LiveGeneration>) -> Result<LiveGeneration> {
    match o {
        Ok(l) => Ok(*l),
        Err(e) => Err(Error::new(e.kind(), e.message()).with_transient(e.is_transient())),
    }
}

/// Paces reloads: `burst` back to back, then `rate` per second.
struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: u32) -> Self {
        Self {
            tokens: burst as f64,
            rate,
            burst: burst as f64,
            last: Instant::now(),
        }
    }

    async fn take(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens < 1.0 {
            let wait = (1.0 - self.tokens) / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            self.tokens = 1.0;
            self.last = Instant::now();
        }
        self.tokens -= 1.0;
    }
}
