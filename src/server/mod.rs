//! Listeners and HTTP routing. [`run`] serves one bound listener on the current runtime until a
//! shutdown future resolves, then lets in-flight requests finish within a grace period;
//! [`workers::run_workers`] serves the main listener thread-per-core. [`conn`] bounds what a
//! client connection may hold: the connection caps, the header and idle timeouts.

pub mod billing;
mod conn;
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
pub use routes::{Routes, ServerBody};
pub use workers::run_workers;

/// Serves `routes` on `listener` until `shutdown` resolves; then stops accepting and waits up
/// to `grace` for open connections to finish their requests. Connections have the header and
/// idle timeouts of `[server]`, not its caps (those are the main listener's, in
/// [`run_workers`]).
pub async fn run(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let routes = Arc::new(routes);
    let connections = Connections::new(routes.gateway());
    let mut accept_errors = conn::AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => connections.serve(stream, &routes, ()),
                    Err(e) => accept_errors.failed(e, &routes.gateway().metrics).await,
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    connections.finish(grace).await;
}

/// The HTTP connections of one runtime, each served in its own task.
struct Connections {
    builder: Builder<TokioExecutor>,
    graceful: GracefulShutdown,
    timeouts: conn::Timeouts,
    gateway: Arc<Gateway>,
}

impl Connections {
    fn new(gateway: &Arc<Gateway>) -> Connections {
        Connections {
            builder: Builder::new(TokioExecutor::new()),
            graceful: GracefulShutdown::new(),
            timeouts: conn::Timeouts::of(&gateway.config.server),
            gateway: gateway.clone(),
        }
    }

    /// Serves `stream` in a task on the current runtime; `guard` is dropped when it closes.
    fn serve(&self, stream: TcpStream, routes: &Arc<Routes>, guard: impl Send + 'static) {
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let activity = conn::Activity::new();
        let requests = activity.clone();
        let service = service_fn(move |req| {
            let routes = routes.clone();
            let request = requests.begin();
            // Boxed: hyper keeps the allocation of a connection's request future for the life
            // of the connection, and this one is ~3 KB; a streaming response outlives it, so
            // 1,000 open streams would hold 3 MB of finished futures.
            Box::pin(async move {
                let resp = routes.handle(req).await;
                Ok::<_, Infallible>(resp.map(|body| conn::Tracked {
                    body,
                    _guard: request,
                }))
            })
        });
        let io = conn::Watched {
            stream,
            activity: activity.clone(),
        };
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        let conn = self.graceful.watch(conn.into_owned());
        let (timeouts, gateway) = (self.timeouts, self.gateway.clone());
        tokio::spawn(async move {
            conn::guard(conn, activity, timeouts, &gateway.metrics).await;
            drop(guard);
        });
    }

    /// Asks every connection to close after its current request; waits up to `grace`. Past
    /// it, requests still open are cut by the gateway, and settle as such.
    async fn finish(self, grace: Duration) {
        tokio::select! {
            _ = self.graceful.shutdown() => {}
            _ = tokio::time::sleep(grace) => {
                self.gateway.grace_over();
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
