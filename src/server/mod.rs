//! Listeners and HTTP routing. [`run`] serves one bound listener on the current runtime until a
//! shutdown future resolves, then lets in-flight requests finish within a grace period;
//! [`workers::run_workers`] serves the main listener thread-per-core.

pub mod billing;
mod routes;
mod usage;
pub mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use crate::proxy::Gateway;
pub use routes::Routes;
pub use workers::run_workers;

/// Serves `routes` on `listener` until `shutdown` resolves; then stops accepting and waits up
/// to `grace` for open connections to finish their requests.
pub async fn run(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let routes = Arc::new(routes);
    let connections = Connections::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => connections.serve(stream, &routes, ()),
                    Err(e) => accept_failed(e).await,
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    connections.finish(grace).await;
}

/// Out of file descriptors and the like: back off instead of spinning.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The HTTP connections of one runtime, each served in its own task.
struct Connections {
    builder: Builder<TokioExecutor>,
    graceful: GracefulShutdown,
}

impl Connections {
    fn new() -> Connections {
        Connections {
            builder: Builder::new(TokioExecutor::new()),
            graceful: GracefulShutdown::new(),
        }
    }

    /// Serves `stream` in a task on the current runtime; `guard` is dropped when it closes.
    fn serve(&self, stream: TcpStream, routes: &Arc<Routes>, guard: impl Send + 'static) {
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let service = service_fn(move |req| {
            let routes = routes.clone();
            // Boxed: hyper keeps the allocation of a connection's request future for the life
            // of the connection, and this one is ~3 KB; a streaming response outlives it, so
            // 1,000 open streams would hold 3 MB of finished futures.
            Box::pin(async move { Ok::<_, Infallible>(routes.handle(req).await) })
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = self.graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
            drop(guard);
        });
    }

    /// Asks every connection to close after its current request; waits up to `grace`.
    async fn finish(self, grace: Duration) {
        tokio::select! {
            _ = self.graceful.shutdown() => {}
            _ = tokio::time::sleep(grace) => {
                tracing::warn!("shutdown grace period over: closing connections with requests still in flight");
            }
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
