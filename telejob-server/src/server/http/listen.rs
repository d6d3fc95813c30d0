//! The HTTP listener: hyper's HTTP/1 with read timeouts, so that a slow or stalled client cannot
//! hold a connection (and its task) forever: request headers must arrive within
//! `header_read_timeout`, and a request body may not stall longer than `body_read_timeout`
//! between two chunks (a slow but steady upload goes on).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// Read timeouts of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time for a request's headers to arrive.
    pub header_read: Duration,
    /// The longest pause in a request body.
    pub body_read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(
                crate::server::settings::defaults::HEADER_READ_TIMEOUT_SECONDS,
            ),
            body_read: Duration::from_secs(
                crate::server::settings::defaults::BODY_READ_TIMEOUT_SECONDS,
            ),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (for up to 10 s).
///
/// # Errors
///
/// None so far: failed accepts are logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, for instance: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let body_read = timeouts.body_read;
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let req = req.map(|b| Body::new(TimeoutBody::new(body_read, b)));
            app.clone().oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after 10 s; closing their connections");
    }
    Ok(())
}
