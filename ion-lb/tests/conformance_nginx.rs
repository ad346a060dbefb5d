//! The LoadBalancer conformance suite against real nginx: a fresh master and prefix per case.

mod support;

use support::TestNginx;

ion_core::load_balancer_conformance!(nginx, async {
    TestNginx::start("nginx load balancer conformance").await
});
