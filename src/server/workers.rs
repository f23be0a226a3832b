//! Thread-per-core serving of the main listener. Connections are accepted on the caller's
//! runtime and handed, whole, to one of `workers` threads, each running its own single-threaded
//! runtime with its own upstream connection pool. A request then runs from start to end on one
//! thread: the downstream connection, the upstream connection and the body between them wake
//! each other without waking another core, as in nginx's worker model. On a work-stealing
//! runtime the same request crossed tasks four to six times, and every crossing could wake the
//! other, parked worker: at 1k requests/s that, not our code, was most of the added latency
//! (bench/results/2026-11-23-profile.md).
//!
//! A connection is given to the worker with the fewest open connections. What the workers
//! share (limits, metrics, the ledger channel) is lock-free or behind short, uncontended locks;
//! background tasks (ledger writer, Redis connection, metrics listener) stay on the caller's
//! runtime.

use std::future::Future;
use std::net::TcpStream as StdTcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Connections, Routes, conn};

/// One worker thread as the acceptor sees it.
struct Worker {
    streams: mpsc::UnboundedSender<(StdTcpStream, conn::Slot)>,
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<()>,
}

/// Decrements a worker's open-connection count when its connection closes.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `routes` on `listener` with `workers` threads until `shutdown` resolves; then stops
/// accepting, and each worker waits up to `grace` for its connections to finish their
/// requests. Returns when every worker has stopped. Fails only when a worker cannot start.
pub async fn run_workers(
    listener: TcpListener,
    routes: Routes,
    workers: usize,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), String> {
    let routes = Arc::new(routes);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut pool = Vec::with_capacity(workers.max(1));
    for i in 0..workers.max(1) {
        pool.push(start_worker(i, routes.clone(), stop_rx.clone(), grace)?);
    }
    let gateway = routes.gateway().clone();
    let caps = conn::Caps::new(&gateway.config.server, gateway.metrics.clone());
    let mut accept_errors = conn::AcceptErrors::default();
    tokio::pin!(shutdown);
    let mut next = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    // Over a cap: closed at once (dropped), counted by `admit`.
                    Ok((stream, peer)) => if let Some(slot) = caps.admit(peer.ip()) {
                        next = (next + 1) % pool.len();
                        hand_over(&pool, next, stream, slot);
                    }
                    Err(e) => accept_errors.failed(e, &gateway.metrics).await,
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    for w in pool {
        drop(w.streams);
        let _ = w.done.await;
    }
    Ok(())
}

/// Gives `stream` to the least busy worker, starting the search at `start` so that ties
/// rotate.
fn hand_over(pool: &[Worker], start: usize, stream: TcpStream, slot: conn::Slot) {
    let best = least_busy(start, pool.len(), |i| pool[i].open.load(Ordering::Relaxed));
    // The worker's reactor registers the socket anew; this leaves ours.
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand a connection to a worker");
            return;
        }
    };
    let w = &pool[best];
    w.open.fetch_add(1, Ordering::Relaxed);
    if w.streams.send((stream, slot)).is_err() {
        // Only after a worker's runtime died: the connection is closed as it drops.
        w.open.fetch_sub(1, Ordering::Relaxed);
        tracing::error!(worker = best, "worker thread is gone; connection dropped");
    }
}

/// The index in `0..n` with the smallest `open(i)`, the first from `start` on (wrapping)
/// among equals.
fn least_busy(start: usize, n: usize, open: impl Fn(usize) -> usize) -> usize {
    (0..n)
        .map(|k| (start + k) % n)
        .min_by_key(|&i| open(i))
        .unwrap_or(0)
}

fn start_worker(
    i: usize,
    routes: Arc<Routes>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Result<Worker, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start worker runtime {i}: {e}"))?;
    let (streams, mut rx) = mpsc::unbounded_channel::<(StdTcpStream, conn::Slot)>();
    let open = Arc::new(AtomicUsize::new(0));
    let (done_tx, done) = oneshot::channel();
    let counter = open.clone();
    std::thread::Builder::new()
        .name(format!("tollgate-worker-{i}"))
        .spawn(move || {
            crate::proxy::upstream::use_worker_pool();
            let recorder = crate::proxy::Recorder::install();
            runtime.block_on(async move {
                // Requests are recorded after their responses are written (proxy::deferred).
                tokio::spawn(crate::proxy::Recorder::run());
                // A timer always due within a second: a request's far deadline (the upstream
                // timeout) registered while no timer is pending is earlier than the driver's
                // next wake-up, and tokio then writes its eventfd to re-arm, a syscall and an
                // extra turn of the event loop on every request.
                // It also closes the worker's long-idle upstream connections.
                tokio::spawn(async {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                        crate::proxy::upstream::sweep();
                    }
                });
                let connections = Connections::new(routes.gateway());
                loop {
                    tokio::select! {
                        s = rx.recv() => {
                            let Some((s, slot)) = s else { break };
                            let guard = (OpenGuard(counter.clone()), slot);
                            match TcpStream::from_std(s) {
                                Ok(stream) => connections.serve(stream, &routes, guard),
                                Err(e) => tracing::warn!(error = %e, "worker cannot take a connection"),
                            }
                        }
                        _ = stop.changed() => break,
                    }
                }
                connections.finish(grace).await;
            });
            // Tasks still running (streams past the grace period) end with the runtime; a
            // usage estimate still tokenizing on a blocking thread gets a moment to settle.
            runtime.shutdown_timeout(Duration::from_secs(2));
            // Whatever is still queued is recorded before the worker reports it has stopped
            // (the ledger drains after that).
            drop(recorder);
            let _ = done_tx.send(());
        })
        .map_err(|e| format!("cannot start worker thread {i}: {e}"))?;
    Ok(Worker {
        streams,
        open,
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::least_busy;

    #[test]
    fn connections_go_to_the_least_busy_worker_and_ties_rotate() {
        assert_eq!(least_busy(0, 3, |i| [3, 1, 2][i]), 1);
        assert_eq!(least_busy(2, 3, |i| [3, 1, 2][i]), 1);
        assert_eq!(least_busy(0, 3, |i| [0, 0, 0][i]), 0);
        assert_eq!(least_busy(1, 3, |i| [0, 0, 0][i]), 1);
        assert_eq!(least_busy(2, 3, |i| [0, 0, 0][i]), 2);
        assert_eq!(least_busy(2, 3, |i| [5, 0, 1][i]), 1);
        assert_eq!(least_busy(0, 1, |i| [7][i]), 0);
    }
}
