//! One aggregator node from a JSON configuration file: `ion-log-aggregator --config node.json`.

use std::path::PathBuf;
use std::time::Duration;

use ion_logs::{Aggregator, AggregatorConfig, NodeBackends};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(p)) => PathBuf::from(p),
        _ => {
            eprintln!("usage: ion-log-aggregator --config <file.json>");
            std::process::exit(2);
        }
    };
    let config = match AggregatorConfig::from_file(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ion-log-aggregator: {e}");
            std::process::exit(2);
        }
    };
    // The search cluster may still be starting: keep trying rather than exit into a restart loop.
    let backends = loop {
        match NodeBackends::from_config(&config).await {
            Ok(b) => break b,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "search cluster not reachable yet, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                eprintln!("ion-log-aggregator: {e}");
                std::process::exit(1);
            }
        }
    };
    let node = match Aggregator::start(config, backends).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ion-log-aggregator: {e}");
            std::process::exit(1);
        }
    };
    // Tests and supervisors read this line to learn the port.
    println!("listening on {}", node.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    node.shutdown().await;
}
