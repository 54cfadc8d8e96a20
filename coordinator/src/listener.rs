//! The accept loop: plain TCP or TLS, HTTP/1.1 by hyper, each request tagged with its remote
//! address (and the verified client certificate, if any) for authentication and audit.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};
use tracing::debug;

use crate::tls::{ClientCertificate, TlsReloader, client_certificate};

/// A client must finish its TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// … and send its request headers within this (slow-header clients are dropped).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits every connection applies to the requests on it.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Largest request head in bytes (hyper's connection buffer; larger heads get 431).
    pub max_header_bytes: usize,
    /// Most header fields in one request (more get 431).
    pub max_headers: usize,
}

impl From<&crate::config::Limits> for HttpLimits {
    fn from(limits: &crate::config::Limits) -> Self {
        Self {
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
        }
    }
}

/// Serves `router` on `listener` until `stop` resolves, then lets open connections finish
/// their current request and returns when they are all closed.
pub async fn serve<S>(
    listener: TcpListener,
    router: S,
    tls: Option<Arc<TlsReloader>>,
    limits: HttpLimits,
    stop: impl Future<Output = ()>,
) where
    S: Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let (stopping, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (router, tls, stopped) = (router.clone(), tls.clone(), stopped.clone());
        connections.spawn(async move {
            match tls {
                None => serve_connection(tcp, remote, None, router, limits, stopped).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                debug!(%remote, %error, "TLS handshake refused");
                                return;
                            }
                            Err(_) => return,
                        };
                    let certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(client_certificate);
                    serve_connection(stream, remote, certificate, router, limits, stopped).await;
                }
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    let _ = stopping.send(true);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<T, S>(
    stream: T,
    remote: SocketAddr,
    certificate: Option<ClientCertificate>,
    router: S,
    limits: HttpLimits,
    mut stopped: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        if let Some(certificate) = &certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        let router = router.clone();
        router.oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                debug!(%remote, %error, "connection ended with an error");
            }
        }
        () = async {
            // The guard `wait_for` returns is not `Send`; drop it before going on.
            let _ = stopped.wait_for(|stop| *stop).await;
        } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
