//! What the real-nginx tests share: a fresh prefix and free loopback ports per case.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener};

use async_trait::async_trait;
use ion_core::testkit::peer_var;
use ion_core::{LiveGeneration, LoadBalancer, Result, RouteTable};
use ion_lb::{NginxConfig, NginxConfigBuilder, NginxLoadBalancer};

pub const VAR: &str = "ION_TEST_NGINX_BIN";

/// A loopback address nothing listens on right now.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("local addr")
}

/// A config builder for a fresh prefix in `dir`, on free ports, or `None` to skip.
pub fn builder(dir: &tempfile::TempDir, what: &str) -> Option<NginxConfigBuilder> {
    let bin = peer_var(VAR, what)?;
    Some(
        NginxConfig::builder(bin, dir.path().join("nginx"))
            .http_listen(free_addr())
            .https_listen(Some(free_addr()))
            .marker_listen(free_addr())
            .worker_processes(1)
            .worker_shutdown_timeout_secs(2)
            .confirm_timeout_ms(3000)
            .reloads_per_sec(50.0)
            .reload_burst(50),
    )
}

/// An nginx load balancer with its own master and prefix; dropping it stops nginx, then removes
/// the prefix.
#[derive(Debug)]
pub struct TestNginx {
    pub lb: NginxLoadBalancer,
    pub dir: tempfile::TempDir,
}

impl TestNginx {
    pub async fn start(what: &str) -> Option<Self> {
        Self::start_with(what, |b| b).await
    }

    pub async fn start_with(
        what: &str,
        edit: impl FnOnce(NginxConfigBuilder) -> NginxConfigBuilder,
    ) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        // Workers run unprivileged and must traverse to the prefix's temp and lua directories.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod temp dir");
        let config = edit(builder(&dir, what)?).build().expect("test config");
        let lb = NginxLoadBalancer::start(config)
            .await
            .unwrap_or_else(|e| panic!("{what}: cannot start nginx from {VAR}: {e}"));
        Some(Self { lb, dir })
    }
}

#[async_trait]
impl LoadBalancer for TestNginx {
    async fn apply(&self, table: &RouteTable) -> Result<LiveGeneration> {
        self.lb.apply(table).await
    }

    async fn live(&self) -> Result<Option<LiveGeneration>> {
        self.lb.live().await
    }
}
