//! ion-lb: nginx as the platform's load balancer, reconfigured from route tables without
//! injection, with every reload confirmed and rolled back when it does not take.
//!
//! - [`mod@render`]: the pure renderer (`RouteTable` + [`NginxConfig`] → configuration text) over
//!   the [`directive`] writer, proved by the independent [`lexer`] on every render.
//! - [`tls`]: certificate and key checks done in Rust before anything reaches disk.
//! - [`NginxProcess`]: a dedicated nginx master ion starts and owns, or attaches to.
//! - [`NginxLoadBalancer`]: the `LoadBalancer` over one master: atomic generations, optional
//!   `nginx -t`, SIGHUP, confirmation through the loopback marker, rollback, coalescing.
//! - [`FanOutLoadBalancer`]: several instances as one, rolled one at a time.

pub mod balancer;
pub mod config;
pub mod directive;
pub mod dynamic;
pub mod fanout;
pub mod files;
pub mod lexer;
pub mod marker;
pub mod process;
pub mod render;
pub mod tls;

pub use balancer::{ApplyStats, NginxLoadBalancer};
pub use config::{NginxConfig, NginxConfigBuilder};
pub use fanout::FanOutLoadBalancer;
pub use process::NginxProcess;
pub use render::{render, Rendered};
