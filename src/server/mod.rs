//! Listeners and HTTP routing. [`run`] serves one bound listener until a shutdown future
//! resolves, then lets in-flight requests finish within a grace period.

mod routes;
mod usage;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::proxy::Gateway;
pub use routes::Routes;

/// Serves `routes` on `listener` until `shutdown` resolves; then stops accepting and waits up
/// to `grace` for open connections to finish their requests.
pub async fn run(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let routes = Arc::new(routes);
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let routes = routes.clone();
                let service = service_fn(move |req| {
                    let routes = routes.clone();
                    async move { Ok::<_, Infallible>(routes.handle(req).await) }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("shutdown grace period over: closing connections with requests still in flight");
        }
    }
}

/// The routes of the main listener for `gateway`.
pub fn main_routes(gateway: Arc<Gateway>) -> Routes {
    let metrics = gateway.config.metrics.listen.is_none();
    Routes::new(gateway, true, metrics)
}

/// The routes of a separate metrics listener.
pub fn metrics_routes(gateway: Arc<Gateway>) -> Routes {
    Routes::new(gateway, false, true)
}
