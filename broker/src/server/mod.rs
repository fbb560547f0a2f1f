//! Running a broker: bind, serve gRPC with bounded connections, housekeeping tasks, metrics, and
//! a graceful shutdown on SIGTERM / SIGINT. The top layer of the crate with `cli`: `service.rs`
//! (the gRPC services, thin wrappers over [`Broker`]) and `metrics_http.rs` (the metrics
//! endpoint) live here.
//!
//! Start order: open the registry (embedded: the file in the data directory; etcd: connect) →
//! take the data directory → bind → register this broker with its advertised address (the bound
//! one unless `--advertised-address`) → one role pass (open the assigned partitions, take their
//! roles) → serve, print `listening on HOST:PORT`, and run the role loop, the ISR timer and the
//! housekeeping tasks.
//!
//! Shutdown order: stop accepting and tell waiting fetches (and acks=all waits) to answer →
//! let in-flight requests finish (bounded by `SHUTDOWN_GRACE_MS`; acks=0 appends included) →
//! close every log (flush + clean-shutdown marker), so the next start needs no recovery →
//! `Registry::shutdown` (etcd: revoke the lease, so leadership moves at once).
//!
//! Security (`crate::security`): with `--security-protocol SSL|SASL_SSL` tonic's TLS acceptor
//! wraps every accepted connection (a handshake must finish within
//! `CONNECTION_FIRST_BYTES_TIMEOUT_MS`), and every service sits behind the `Authenticate`
//! interceptor. A non-loopback PLAINTEXT listener logs a warning at start.
//!
//! Connections: the accept loop takes a slot (`CONNECTIONS_MAX`) before accepting, so excess
//! connections wait in the kernel's backlog; a connection must send its first bytes within
//! `CONNECTION_FIRST_BYTES_TIMEOUT_MS` or it is closed, so idle sockets cannot hold slots.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use sluiceway_core::error::error_chain;
use sluiceway_core::limits::{
    CONNECTION_FIRST_BYTES_TIMEOUT_MS, CONNECTIONS_MAX, HTTP2_CONNECTION_WINDOW_BYTES,
    HTTP2_FRAME_BYTES_MAX, HTTP2_STREAM_WINDOW_BYTES, LOG_TICK_INTERVAL_MS, REQUEST_BYTES_MAX,
    RESPONSE_BYTES_MAX, SERVER_ACCEPT_RETRY_MS, SERVER_ACCEPTED_QUEUE_CONNECTIONS,
    SERVER_KEEPALIVE_INTERVAL_MS, SERVER_KEEPALIVE_TIMEOUT_MS, SHUTDOWN_GRACE_MS,
    STREAMS_PER_CONNECTION_MAX,
};
use sluiceway_core::{Error, Result};
use sluiceway_proto::v1;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::{debug, error, info, warn};

mod fetch_wire;
pub mod metrics_http;
pub mod service;

use crate::broker::{Broker, open_registry, run_role_loop};
use crate::config::BrokerConfig;
use crate::errors::blocking;
use crate::replication::run_isr_timer;
use crate::security::{Authenticate, Authorizer, RefusePlaintext};
use fetch_wire::LogRoutes;
use service::Service;

/// An accepted connection holding its connection slot until dropped.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    broker: Arc<Broker>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.broker
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The four services behind `interceptor`, on `builder`.
fn routes<I>(
    builder: tonic::transport::Server,
    service: &Service,
    interceptor: I,
) -> tonic::transport::server::Router
where
    I: tonic::service::Interceptor + Clone + Send + Sync + 'static,
{
    let mut builder = builder
        .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX))
        .http2_keepalive_interval(Some(Duration::from_millis(SERVER_KEEPALIVE_INTERVAL_MS)))
        .http2_keepalive_timeout(Some(Duration::from_millis(SERVER_KEEPALIVE_TIMEOUT_MS)))
        .tcp_nodelay(true)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
        .max_frame_size(HTTP2_FRAME_BYTES_MAX);
    builder
        .add_service(InterceptedService::new(
            // Fetch answers leave tonic's encoder out (`fetch_wire`): no copy of message sets.
            LogRoutes::new(
                v1::log_server::LogServer::new(service.clone())
                    .max_decoding_message_size(REQUEST_BYTES_MAX as usize)
                    .max_encoding_message_size(RESPONSE_BYTES_MAX as usize),
                service.clone(),
            ),
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(
            v1::admin_server::AdminServer::new(service.clone())
                .max_decoding_message_size(REQUEST_BYTES_MAX as usize)
                .max_encoding_message_size(RESPONSE_BYTES_MAX as usize),
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(
            v1::group_server::GroupServer::new(service.clone())
                .max_decoding_message_size(REQUEST_BYTES_MAX as usize)
                .max_encoding_message_size(RESPONSE_BYTES_MAX as usize),
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(
            v1::registry_server::RegistryServer::new(service.clone())
                .max_decoding_message_size(REQUEST_BYTES_MAX as usize)
                .max_encoding_message_size(RESPONSE_BYTES_MAX as usize),
            interceptor,
        ))
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Accepts connections (bounded) and hands those that speak within the timeout to the server;
/// with TLS on (`plain_tx`), a connection whose first byte is not a TLS handshake goes to the
/// server that refuses plaintext clients with a clear error.
async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    tx: mpsc::Sender<std::io::Result<Conn>>,
    plain_tx: Option<mpsc::Sender<std::io::Result<Conn>>>,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut shutdown = broker_shutdown(&broker);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(SERVER_ACCEPT_RETRY_MS)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        broker
            .metrics
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        broker
            .metrics
            .connections_open
            .fetch_add(1, Ordering::Relaxed);
        let conn = Conn {
            stream,
            _slot: slot,
            broker: broker.clone(),
        };
        let tx = tx.clone();
        let plain_tx = plain_tx.clone();
        tokio::spawn(async move {
            let mut probe = [0u8; 1];
            match tokio::time::timeout(
                Duration::from_millis(CONNECTION_FIRST_BYTES_TIMEOUT_MS),
                conn.stream.peek(&mut probe),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => match plain_tx {
                    Some(plain) if probe[0] != TLS_HANDSHAKE_RECORD => {
                        debug!(%peer, "plaintext connection to a TLS listener; refusing its requests");
                        let _ = plain.send(Ok(conn)).await;
                    }
                    _ => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                },
                Ok(Ok(_)) => debug!(%peer, "connection closed before sending anything"),
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "connection failed before sending anything")
                }
                Err(_) => debug!(%peer, "connection sent nothing in time; closing it"),
            }
        });
    }
}

fn broker_shutdown(broker: &Broker) -> tokio::sync::watch::Receiver<bool> {
    broker.shutdown_receiver()
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        info!("interrupted: shutting down");
    }
}

/// Runs a broker until SIGTERM / SIGINT. Prints `listening on HOST:PORT` to stdout once serving.
pub async fn run(config: BrokerConfig) -> Result<()> {
    let listen = config.listen;
    let metrics_listen = config.metrics_listen;
    let retention_interval = Duration::from_millis(config.retention_check_interval_ms);
    let registry = open_registry(&config).await?;
    let broker = {
        let (config, registry) = (config.clone(), registry.clone());
        blocking(move || Broker::open(config, registry)).await?
    };
    let broker = Arc::new(broker);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Error::io("bind", listen.to_string(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("local address of", listen.to_string(), e))?;
    let advertised = config
        .advertised_address
        .clone()
        .unwrap_or_else(|| bound.to_string());
    {
        let (b, a) = (broker.clone(), advertised.clone());
        blocking(move || b.registry.register_broker(b.config.broker_id, &a)).await?;
    }
    // Open the assigned partitions and take their roles before serving, so the first requests
    // find them.
    {
        let b = broker.clone();
        let admin = broker.admin_lock.lock().await;
        blocking(move || b.apply_registry(true)).await?;
        drop(admin);
    }

    let mut background = Vec::new();
    if let Some(addr) = metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io("bind metrics", addr.to_string(), e))?;
        let local = l
            .local_addr()
            .map_err(|e| Error::io("local address of", addr.to_string(), e))?;
        info!(address = %local, "metrics endpoint listening");
        println!("metrics on {local}");
        background.push(tokio::spawn(metrics_http::serve(l, broker.clone())));
    }
    {
        let b = broker.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(LOG_TICK_INTERVAL_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut retention = tokio::time::interval(retention_interval);
            retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let b = b.clone();
                        let _ = tokio::task::spawn_blocking(move || b.tick_all()).await;
                    }
                    _ = retention.tick() => {
                        let b = b.clone();
                        let _ = tokio::task::spawn_blocking(move || b.enforce_retention_all()).await;
                    }
                }
            }
        }));
    }

    background.push(tokio::spawn(
        broker.groups.clone().run_timer(broker.shutdown_receiver()),
    ));
    background.push(tokio::spawn(run_role_loop(broker.clone())));
    background.push(tokio::spawn(run_isr_timer(broker.replicas.clone())));

    let (tx, rx) = mpsc::channel(SERVER_ACCEPTED_QUEUE_CONNECTIONS);
    let (plain_tx, plain_rx) = mpsc::channel(SERVER_ACCEPTED_QUEUE_CONNECTIONS);
    let tls = broker.config.security.server_tls()?;
    let tls_on = tls.is_some();
    let plain_tx = tls_on.then_some(plain_tx);
    background.push(tokio::spawn(accept_loop(
        listener,
        broker.clone(),
        tx,
        plain_tx,
    )));
    let service = Service {
        broker: broker.clone(),
        authz: Arc::new(Authorizer::new(
            &broker.config.security,
            broker.registry.clone(),
        )),
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| Error::InvalidConfig {
            key: "ssl_certificate_location".into(),
            reason: format!(
                "the TLS certificate or key cannot be used: {}",
                error_chain(&e)
            ),
        })?;
    }
    // Every service runs behind the same interceptor: it decides who the request is from
    // (and, with SASL, refuses it without valid credentials) before any service method runs.
    let auth = Authenticate::new(&broker.config.security, broker.registry.clone());
    let server = routes(builder, &service, auth);
    // A TLS listener answers a client that speaks plaintext HTTP/2 to it with a clear error
    // instead of a failed handshake (which a client reports as a bare connection failure).
    if tls_on {
        let refuse = routes(
            tonic::transport::Server::builder(),
            &service,
            RefusePlaintext,
        );
        background.push(tokio::spawn(async move {
            if let Err(e) = refuse
                .serve_with_incoming(ReceiverStream::new(plain_rx))
                .await
            {
                warn!(error = %e, "the plaintext-refusal server failed");
            }
        }));
    }

    if !bound.ip().is_loopback() && !broker.config.security.is_protected() {
        warn!(address = %bound,
            "listening on a non-loopback address in PLAINTEXT without authentication: anyone who \
             can reach it can read, write and delete every topic; see README \"Securing a broker\" \
             (--security-protocol SASL_SSL, --authorizer)");
    }
    info!(address = %bound, advertised = %advertised, broker_id = %broker.config.broker_id,
        data_dir = %broker.config.data_dir.display(), "broker serving");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {bound}");
        let _ = out.flush();
    }

    let b = broker.clone();
    let signal = async move {
        wait_for_signal().await;
        b.begin_shutdown();
    };
    let serve = server.serve_with_incoming_shutdown(ReceiverStream::new(rx), signal);
    tokio::pin!(serve);
    let mut shutdown = broker.shutdown_receiver();
    let served = tokio::select! {
        r = &mut serve => Some(r),
        _ = shutdown.changed() => None,
    };
    let served = match served {
        Some(r) => r,
        // The signal arrived: in-flight requests get a bounded grace period.
        None => {
            match tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), &mut serve).await {
                Ok(r) => r,
                Err(_) => {
                    warn!("in-flight requests did not finish within the grace period");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = served {
        error!(error = %e, "the gRPC server failed");
    }
    broker.begin_shutdown();
    if !broker.drain(Duration::from_millis(SHUTDOWN_GRACE_MS)).await {
        warn!("background appends did not finish within the grace period");
    }
    for t in background {
        t.abort();
    }
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || {
        b.close_all();
        // etcd: revoke the lease, so the controller moves leadership away now instead of after
        // the session timeout.
        b.registry.shutdown();
    })
    .await;
    info!("broker stopped; logs closed cleanly");
    Ok(())
}
