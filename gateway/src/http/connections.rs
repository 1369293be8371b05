//! Client connections, plain or TLS: at most `server.max_connections` served at once (more wait
//! in the listen backlog until one ends), a TLS handshake within 10 s, request headers within
//! `server.header_timeout` on HTTP/1.1 (a client that trickles them, slowloris, is dropped),
//! HTTP/1.1 and HTTP/2, and a graceful drain at shutdown.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

/// A TLS handshake must end within this, or the connection is dropped.
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);
/// Connections still open this long after shutdown began are closed.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);

/// What a client connection may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    /// Largest request head: HTTP/1.1's read buffer (a longer head gets 431 from hyper), HTTP/2's
    /// header list.
    pub(crate) max_header_size: usize,
}

/// The TLS configuration in use (replaced on reload), or none for plain HTTP.
pub(crate) type Tls = Option<Arc<RwLock<Arc<ServerConfig>>>>;

/// Serves `app` on `listener` until `shutdown` completes, then drains the connections.
pub(crate) async fn serve<S>(
    listener: tokio::net::TcpListener,
    tls: Tls,
    limits: ConnectionLimits,
    app: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    S: tower::Service<Request, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first: past the limit, clients wait in the backlog, not in memory here.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot?,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service =
            tower::ServiceExt::map_request(app.clone(), |request: hyper::Request<Incoming>| request.map(Body::new));
        let watcher = graceful.watcher();
        let acceptor =
            tls.as_ref().map(|current| TlsAcceptor::from(current.read().unwrap_or_else(|p| p.into_inner()).clone()));
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                return serve_one(stream, peer, service, limits, watcher).await;
            };
            match tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_one(stream, peer, service, limits, watcher).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_WITHIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open {DRAIN_WITHIN:?} after shutdown began were closed");
    }
    Ok(())
}

/// Serves one connection's requests until it ends.
async fn serve_one<I, S>(
    stream: I,
    peer: std::net::SocketAddr,
    service: S,
    limits: ConnectionLimits,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<hyper::Request<Incoming>, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_size);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_size.try_into().unwrap_or(u32::MAX));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
