//! ion-lb: nginx as the platform's load balancer, reconfigured from route tables without
//! injection, with every reload confirmed and rolled back when it does not take.
//!
//! - [`render`]: the pure renderer (`RouteTable` + [`NginxConfig`] → configuration text) over
//!   the [`directive`] writer, proved by the independent [`lexer`] on every render.
//! - [`tls`]: certificate and key checks done in Rust before anything reaches disk.

pub mod config;
pub mod directive;
pub mod lexer;
pub mod render;
pub mod tls;

pub use config::{NginxConfig, NginxConfigBuilder};
pub use render::{render, Rendered};
