//! The marker probe: asks nginx's loopback marker server which configuration it is serving.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ion_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::render::{MARKER_PATH, MARKER_PREFIX};

/// Reads the marker once: the hash the answering worker serves, as hex.
pub async fn read_marker(addr: SocketAddr, timeout: Duration) -> Result<String> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {MARKER_PATH} HTTP/1.0\r\nHost: ion-marker\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.take(64 * 1024).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| Error::unavailable("marker probe timed out").with_transient(true))?
        .map_err(|e| crate::files::io_error("marker probe", e).with_transient(true))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::unavailable("marker answer has no body").with_transient(true))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(Error::unavailable("marker answered without 200").with_transient(true));
    }
    body.trim()
        .strip_prefix(MARKER_PREFIX)
        .map(str::to_owned)
        .ok_or_else(|| Error::unavailable("marker answer is not ion's").with_transient(true))
}

/// Polls the marker until it reports `hash` on `confirmations` consecutive connections or
/// `deadline` passes. Consecutive answers matter: right after a reload an old worker may still
/// accept a connection, so one match is not proof that every worker moved on.
pub async fn wait_for(addr: SocketAddr, hash: &str, deadline: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut streak = 0;
    let mut last;
    loop {
        match read_marker(addr, Duration::from_millis(500)).await {
            Ok(h) if h == hash => {
                streak += 1;
                if streak >= 3 {
                    return Ok(start.elapsed());
                }
                continue;
            }
            Ok(h) => {
                streak = 0;
                last = format!("hash {h}");
            }
            Err(e) => {
                streak = 0;
                last = e.to_string();
            }
        }
        if start.elapsed() >= deadline {
            return Err(Error::unavailable(format!(
                "nginx did not serve configuration {hash} within {}ms (last: {last})",
                deadline.as_millis()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
