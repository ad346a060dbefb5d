//! `NginxConfig`: where nginx lives, what it listens on, and how reloads are paced and confirmed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ion_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::directive::Value;

/// Settings of one nginx instance driven by ion. Build with [`NginxConfig::builder`] or
/// [`NginxConfig::from_env`]; [`NginxConfigBuilder::build`] fails with `InvalidConfig` naming the
/// key at fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NginxConfig {
    /// The nginx binary (`ION_NGINX_BIN`).
    pub nginx_bin: PathBuf,
    /// Absolute directory ion owns: `conf/` generations, `certs/`, `logs/`, `tmp/`, the pid file
    /// (`ION_NGINX_PREFIX`).
    pub prefix: PathBuf,
    /// Address of the plain-HTTP listener (`ION_NGINX_HTTP_LISTEN`, default `127.0.0.1:8080`).
    pub http_listen: SocketAddr,
    /// Address of the TLS listener, if any (`ION_NGINX_HTTPS_LISTEN`).
    pub https_listen: Option<SocketAddr>,
    /// Loopback address of the marker server that reports the live configuration's hash
    /// (`ION_NGINX_MARKER_LISTEN`, default `127.0.0.1:8099`).
    pub marker_listen: SocketAddr,
    /// nginx `worker_processes` (`ION_NGINX_WORKER_PROCESSES`, default 2).
    pub worker_processes: u32,
    /// nginx `worker_connections` (default 4096).
    pub worker_connections: u32,
    /// Bound on how long old workers linger after a reload, in seconds (default 10).
    pub worker_shutdown_timeout_secs: u64,
    /// The unprivileged user workers run as when the master runs as root (`ION_NGINX_USER`).
    pub user: Option<String>,
    /// Idle keep-alive connections kept per upstream (default 32).
    pub upstream_keepalive: u32,
    /// Passive health: failures before a backend is skipped (default 3).
    pub max_fails: u32,
    /// Passive health: how long a failed backend is skipped, in seconds (default 10).
    pub fail_timeout_secs: u64,
    /// Configuration generations kept on disk (default 5, at least 2).
    pub keep_generations: usize,
    /// How long a reload may take to show up on the marker, in milliseconds (default 5000).
    pub confirm_timeout_ms: u64,
    /// Run `nginx -t` on each candidate against a scratch prefix (default true). Defence in
    /// depth only: the renderer and its self-check are the security boundary.
    pub check_with_nginx_t: bool,
    /// Debounce: wait this long after a change for more changes before reloading (default 0).
    pub min_quiet_ms: u64,
    /// Debounce cap: never delay a change longer than this (default 1000).
    pub max_delay_ms: u64,
    /// Token bucket refill: reloads per second sustained (default 2.0).
    pub reloads_per_sec: f64,
    /// Token bucket size: reloads allowed back to back (default 4).
    pub reload_burst: u32,
    /// Directory holding `ndk_http_module.so` and `ngx_http_lua_module.so`
    /// (`ION_NGINX_LUA_MODULES_DIR`, e.g. `/usr/lib/nginx/modules`). When set, upstream
    /// membership changes are pushed to nginx without a reload (see [`crate::dynamic`]).
    pub lua_modules_dir: Option<PathBuf>,
}

impl NginxConfig {
    /// A builder with defaults for everything but the binary and the prefix.
    pub fn builder(
        nginx_bin: impl Into<PathBuf>,
        prefix: impl Into<PathBuf>,
    ) -> NginxConfigBuilder {
        NginxConfigBuilder(NginxConfig {
            nginx_bin: nginx_bin.into(),
            prefix: prefix.into(),
            http_listen: "127.0.0.1:8080".parse().expect("constant address"),
            https_listen: None,
            marker_listen: "127.0.0.1:8099".parse().expect("constant address"),
            worker_processes: 2,
            worker_connections: 4096,
            worker_shutdown_timeout_secs: 10,
            user: None,
            upstream_keepalive: 32,
            max_fails: 3,
            fail_timeout_secs: 10,
            keep_generations: 5,
            confirm_timeout_ms: 5000,
            check_with_nginx_t: true,
            min_quiet_ms: 0,
            max_delay_ms: 1000,
            reloads_per_sec: 2.0,
            reload_burst: 4,
            lua_modules_dir: None,
        })
    }

    /// Reads `ION_NGINX_*` variables (see the field docs); `ION_NGINX_BIN` and
    /// `ION_NGINX_PREFIX` are required.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let bin = var("ION_NGINX_BIN")
            .ok_or_else(|| Error::invalid_config("ION_NGINX_BIN is not set"))?;
        let prefix = var("ION_NGINX_PREFIX")
            .ok_or_else(|| Error::invalid_config("ION_NGINX_PREFIX is not set"))?;
        let addr = |k: &str| -> Result<Option<SocketAddr>> {
            var(k)
                .map(|v| {
                    v.parse()
                        .map_err(|_| Error::invalid_config(format!("{k} is not an ip:port")))
                })
                .transpose()
        };
        let mut b = Self::builder(bin, prefix);
        if let Some(a) = addr("ION_NGINX_HTTP_LISTEN")? {
            b = b.http_listen(a);
        }
        if let Some(a) = addr("ION_NGINX_HTTPS_LISTEN")? {
            b = b.https_listen(Some(a));
        }
        if let Some(a) = addr("ION_NGINX_MARKER_LISTEN")? {
            b = b.marker_listen(a);
        }
        if let Some(n) = var("ION_NGINX_WORKER_PROCESSES") {
            b = b.worker_processes(n.parse().map_err(|_| {
                Error::invalid_config("ION_NGINX_WORKER_PROCESSES is not a number")
            })?);
        }
        if let Some(d) = var("ION_NGINX_LUA_MODULES_DIR") {
            b = b.lua_modules_dir(Some(d.into()));
        }
        if let Some(u) = var("ION_NGINX_USER") {
            b = b.user(Some(u));
        }
        b.build()
    }

    /// The directory of configuration generations.
    pub fn conf_dir(&self) -> PathBuf {
        self.prefix.join("conf")
    }

    /// The stable path the master reads (a symlink to the live generation).
    pub fn conf_path(&self) -> PathBuf {
        self.conf_dir().join("nginx.conf")
    }

    /// The directory of certificates and keys (0700; files 0600).
    pub fn certs_dir(&self) -> PathBuf {
        self.prefix.join("certs")
    }

    /// The master's pid file.
    pub fn pid_path(&self) -> PathBuf {
        self.prefix.join(PID_FILE)
    }

    /// The directory of ion's Lua files.
    pub fn lua_dir(&self) -> PathBuf {
        self.prefix.join("lua")
    }

    /// The control secret's file.
    pub fn secret_path(&self) -> PathBuf {
        self.conf_dir().join("control.secret")
    }

    /// The confirmation deadline.
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.confirm_timeout_ms)
    }
}

/// The pid file, relative to the prefix.
pub(crate) const PID_FILE: &str = "nginx.pid";

/// Builds an [`NginxConfig`].
#[derive(Clone, Debug)]
pub struct NginxConfigBuilder(NginxConfig);

macro_rules! setter {
    ($name:ident, $ty:ty) => {
        #[doc = concat!("Sets `", stringify!($name), "`.")]
        pub fn $name(mut self, v: $ty) -> Self {
            self.0.$name = v;
            self
        }
    };
}

impl NginxConfigBuilder {
    setter!(http_listen, SocketAddr);
    setter!(https_listen, Option<SocketAddr>);
    setter!(marker_listen, SocketAddr);
    setter!(worker_processes, u32);
    setter!(worker_connections, u32);
    setter!(worker_shutdown_timeout_secs, u64);
    setter!(user, Option<String>);
    setter!(upstream_keepalive, u32);
    setter!(max_fails, u32);
    setter!(fail_timeout_secs, u64);
    setter!(keep_generations, usize);
    setter!(confirm_timeout_ms, u64);
    setter!(check_with_nginx_t, bool);
    setter!(min_quiet_ms, u64);
    setter!(max_delay_ms, u64);
    setter!(reloads_per_sec, f64);
    setter!(reload_burst, u32);
    setter!(lua_modules_dir, Option<PathBuf>);

    /// Checks every field.
    pub fn build(self) -> Result<NginxConfig> {
        let c = self.0;
        let bad = |key: &str, why: &str| Err(Error::invalid_config(format!("{key}: {why}")));
        if !c.prefix.is_absolute() {
            return bad("prefix", "must be an absolute path");
        }
        if !path_is_safe(&c.prefix) {
            return bad("prefix", "must be printable ascii without '$' or '..'");
        }
        if let Some(d) = &c.lua_modules_dir {
            if !d.is_absolute() || !path_is_safe(d) {
                return bad(
                    "lua_modules_dir",
                    "must be an absolute, printable ascii path",
                );
            }
        }
        if !c.marker_listen.ip().is_loopback() {
            return bad("marker_listen", "must be a loopback address");
        }
        let mut ports = vec![c.http_listen, c.marker_listen];
        ports.extend(c.https_listen);
        for (i, a) in ports.iter().enumerate() {
            if a.port() == 0 {
                return bad("listen", "port 0 is not allowed");
            }
            if ports[..i].contains(a) {
                return bad("listen", "http, https and marker addresses must differ");
            }
        }
        if c.worker_processes == 0 || c.worker_processes > 256 {
            return bad("worker_processes", "must be 1..=256");
        }
        if c.worker_connections < 16 {
            return bad("worker_connections", "must be at least 16");
        }
        if let Some(u) = &c.user {
            let ok = !u.is_empty()
                && u.len() <= 32
                && u.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !ok {
                return bad("user", "must be a plain unix user name");
            }
        }
        if c.keep_generations < 2 {
            return bad("keep_generations", "must be at least 2");
        }
        if c.confirm_timeout_ms == 0 {
            return bad("confirm_timeout_ms", "must be positive");
        }
        if c.max_fails == 0 || c.fail_timeout_secs == 0 || c.worker_shutdown_timeout_secs == 0 {
            return bad(
                "max_fails",
                "passive-health and shutdown bounds must be positive",
            );
        }
        if !(c.reloads_per_sec.is_finite() && c.reloads_per_sec > 0.0) || c.reload_burst == 0 {
            return bad(
                "reloads_per_sec",
                "token bucket must have a positive rate and size",
            );
        }
        if c.min_quiet_ms > c.max_delay_ms {
            return bad("min_quiet_ms", "must not exceed max_delay_ms");
        }
        Ok(c)
    }
}

/// True when `p` can be written into the configuration as a [`Value`].
pub(crate) fn path_is_safe(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        Value::new(s).is_ok() && !s.split('/').any(|seg| seg == "..") && !s.contains('"')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_names_the_bad_key() {
        let err = NginxConfig::builder("/usr/sbin/nginx", "relative")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ion_core::ErrorKind::InvalidConfig);
        assert!(err.message().contains("prefix"));
        let err = NginxConfig::builder("/usr/sbin/nginx", "/tmp/x")
            .marker_listen("0.0.0.0:9000".parse().unwrap())
            .build()
            .unwrap_err();
        assert!(err.message().contains("marker_listen"));
        let err = NginxConfig::builder("/usr/sbin/nginx", "/tmp/$x")
            .build()
            .unwrap_err();
        assert!(err.message().contains("prefix"));
    }
}
