//! The metrics endpoint (`--metrics-listen`, off by default): a tiny HTTP/1.1 server answering
//! `GET /metrics` (and `GET /`) with [`crate::metrics::render`] and closing the connection after
//! each answer. It bounds connections, request size and time with `limits::METRICS_*`.

use std::sync::Arc;
use std::time::Duration;

use sluiceway_core::limits::{
    METRICS_CONNECTIONS_MAX, METRICS_REQUEST_BYTES_MAX, METRICS_REQUEST_TIMEOUT_MS,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::broker::Broker;
use crate::metrics::render;

/// Serves the metrics endpoint until the task is dropped.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    let slots = Arc::new(Semaphore::new(METRICS_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut stream, peer)) = listener.accept().await else {
            continue;
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let r = tokio::time::timeout(Duration::from_millis(METRICS_REQUEST_TIMEOUT_MS), async {
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut chunk).await?;
                    if n == 0 || buf.len() + n > METRICS_REQUEST_BYTES_MAX {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
                let line = String::from_utf8_lossy(line);
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let (status, ctype, body) = match (method, path) {
                    ("GET", "/metrics" | "/") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(&broker.metrics, &broker.metrics_snapshot())),
                    ("GET", _) => ("404 Not Found", "text/plain", "not found; try /metrics\n".to_owned()),
                    _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_owned()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                stream.shutdown().await
            })
            .await;
            if let Ok(Err(e)) = r {
                debug!(%peer, error = %e, "metrics connection failed");
            }
        });
    }
}
