//! `NginxProcess`: a dedicated nginx master that ion starts and owns, or one it attaches to.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ion_core::{Error, Result, RouteTable};
use rustix::process::{kill_process, test_kill_process, Pid, Signal};

use crate::config::NginxConfig;
use crate::dynamic::{write_lua_files, ControlSecret};
use crate::files::{ensure_dir, io_error, swap_symlink, write_atomic};
use crate::marker;
use crate::render::{render_with, Rendered};

/// A running nginx master.
///
/// Started with [`NginxProcess::start`] it is ours: it runs in the foreground (`daemon off`) as
/// our child with our prefix, and [`NginxProcess::stop`] or drop shuts it down. Attached with
/// [`NginxProcess::attach`] it is someone else's: we signal it but never stop it.
#[derive(Debug)]
pub struct NginxProcess {
    config: NginxConfig,
    child: Option<Child>,
    bootstrap_hash: String,
}

/// The first configuration file, serving the empty table.
pub(crate) const BOOTSTRAP_FILE: &str = "gen-bootstrap.conf";

impl NginxProcess {
    /// Prepares the prefix, writes the empty-table configuration, starts the master and waits
    /// until its marker answers.
    pub async fn start(config: &NginxConfig) -> Result<Self> {
        prepare_prefix(config)?;
        let secret = ControlSecret::load_or_create(&config.secret_path())?;
        if config.lua_modules_dir.is_some() {
            write_lua_files(&config.lua_dir())?;
        }
        let rendered = render_with(
            &RouteTable::empty(),
            config,
            SystemTime::now(),
            Some(&secret),
        )?;
        let bootstrap = config.conf_dir().join(BOOTSTRAP_FILE);
        write_atomic(&bootstrap, rendered.text.as_bytes(), 0o600)?;
        swap_symlink(&config.conf_path(), &bootstrap)?;
        let stderr = fs::File::create(config.prefix.join("logs/stderr.log"))
            .map_err(|e| io_error("create stderr log", e))?;
        let child = Command::new(&config.nginx_bin)
            .arg("-p")
            .arg(&config.prefix)
            .arg("-c")
            .arg(config.conf_path())
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| io_error("start nginx", e))?;
        let mut me = Self {
            config: config.clone(),
            child: Some(child),
            bootstrap_hash: rendered.hash.to_string(),
        };
        me.wait_started(&rendered).await?;
        tracing::info!(prefix = %config.prefix.display(), pid = ?me.pid().ok(), "nginx started");
        Ok(me)
    }

    async fn wait_started(&mut self, rendered: &Rendered) -> Result<()> {
        let deadline = Instant::now() + self.config.confirm_timeout().max(Duration::from_secs(5));
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(Error::unavailable(format!(
                        "nginx exited at start with {status}: {}",
                        self.stderr_tail()
                    )));
                }
            }
            match marker::read_marker(self.config.marker_listen, Duration::from_millis(200)).await {
                Ok(h) if h == rendered.hash.to_string() => return Ok(()),
                Ok(_) => {
                    return Err(Error::unavailable(
                        "another nginx answers on the marker address",
                    ))
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Err(e) => {
                    return Err(Error::unavailable(format!(
                        "nginx did not come up: {e}; {}",
                        self.stderr_tail()
                    )))
                }
            }
        }
    }

    /// Attaches to a master already running with `config`'s prefix (found by its pid file).
    pub fn attach(config: &NginxConfig) -> Result<Self> {
        let me = Self {
            config: config.clone(),
            child: None,
            bootstrap_hash: String::new(),
        };
        let pid = me.pid()?;
        test_kill_process(pid)
            .map_err(|e| Error::unavailable(format!("nginx master {pid:?} is not running: {e}")))?;
        Ok(me)
    }

    /// The configuration this process runs with.
    pub fn config(&self) -> &NginxConfig {
        &self.config
    }

    /// Whether ion started (and will stop) this master.
    pub fn is_owned(&self) -> bool {
        self.child.is_some()
    }

    /// The hash of the bootstrap configuration (empty for an attached master).
    pub(crate) fn bootstrap_hash(&self) -> &str {
        &self.bootstrap_hash
    }

    /// The master's pid, read from its pid file each time (nginx rewrites it on upgrade).
    pub fn pid(&self) -> Result<Pid> {
        let path = self.config.pid_path();
        let text = fs::read_to_string(&path).map_err(|e| io_error("read nginx pid file", e))?;
        text.trim()
            .parse::<i32>()
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| Error::corrupt(format!("bad pid file {}", path.display())))
    }

    /// Sends SIGHUP: the master re-reads `conf/nginx.conf`, keeping the old configuration if the
    /// new one fails on its side.
    pub fn reload(&self) -> Result<()> {
        let pid = self.pid()?;
        kill_process(pid, Signal::HUP)
            .map_err(|e| Error::unavailable(format!("signal nginx master: {e}")))
    }

    /// The pids of the master's workers that still accept connections (their title is
    /// `nginx: worker process`; a worker told to quit renames itself `… is shutting down` as it
    /// closes its listeners). Read from `/proc`, so Linux only.
    pub fn accepting_workers(&self) -> Result<BTreeSet<i32>> {
        let master = self.pid()?.as_raw_nonzero().get();
        let mut out = BTreeSet::new();
        let entries = fs::read_dir("/proc").map_err(|e| io_error("list /proc", e))?;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The fields after the parenthesised command: state, then the parent pid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid != Some(master) {
                continue;
            }
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let title = String::from_utf8_lossy(&cmdline);
            if title.trim_end_matches(['\0', ' ']) == "nginx: worker process" {
                out.insert(pid);
            }
        }
        Ok(out)
    }

    /// Waits until none of `old` still accepts connections, or `deadline` passes (then false).
    pub async fn wait_workers_retired(&self, old: &BTreeSet<i32>, deadline: Duration) -> bool {
        let start = Instant::now();
        loop {
            match self.accepting_workers() {
                Ok(now) if now.is_disjoint(old) => return true,
                Err(_) => return false,
                Ok(_) if start.elapsed() >= deadline => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Whether the master is alive.
    pub fn is_running(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            return matches!(child.try_wait(), Ok(None));
        }
        self.pid()
            .map(|p| test_kill_process(p).is_ok())
            .unwrap_or(false)
    }

    /// Stops an owned master gracefully (SIGQUIT, then SIGTERM after the shutdown timeout); an
    /// attached master is left running.
    pub async fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32).expect("child pid is positive");
        let _ = kill_process(pid, Signal::QUIT);
        let grace = Duration::from_secs(self.config.worker_shutdown_timeout_secs + 2);
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                tracing::info!(prefix = %self.config.prefix.display(), "nginx stopped");
                return Ok(());
            }
            if start.elapsed() > grace {
                terminate(&mut child);
                return Err(Error::unavailable(
                    "nginx did not quit gracefully in time; terminated",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr_tail(&self) -> String {
        let mut out = String::new();
        for f in ["logs/stderr.log", "logs/error.log"] {
            if let Ok(t) = fs::read_to_string(self.config.prefix.join(f)) {
                let tail: Vec<&str> = t.lines().rev().take(5).collect();
                out.extend(tail.into_iter().rev().map(|l| format!("{l} | ")));
            }
        }
        out
    }
}

/// SIGTERM (nginx's fast shutdown, which also stops the workers), then SIGKILL if needed.
fn terminate(child: &mut Child) {
    if let Some(pid) = Pid::from_raw(child.id() as i32) {
        let _ = kill_process(pid, Signal::TERM);
    }
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for NginxProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

/// Creates the prefix layout. The prefix is world-traversable because workers run as an
/// unprivileged user and need the temp directories; certificates stay in a 0700 directory that
/// only the master (root) reads.
pub(crate) fn prepare_prefix(config: &NginxConfig) -> Result<()> {
    ensure_dir(&config.prefix, 0o755)?;
    for (sub, mode) in [
        ("conf", 0o700),
        ("logs", 0o755),
        ("tmp", 0o755),
        ("certs", 0o700),
        ("scratch", 0o700),
        ("scratch/logs", 0o700),
        ("scratch/tmp", 0o700),
    ] {
        ensure_dir(&config.prefix.join(sub), mode)?;
    }
    Ok(())
}

/// The scratch prefix `nginx -t` runs against.
pub(crate) fn scratch_prefix(config: &NginxConfig) -> PathBuf {
    config.prefix.join("scratch")
}
