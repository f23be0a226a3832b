//! What one client connection may hold, and for how long: the connection caps checked at
//! accept ([`Caps`]), the header and idle timeouts of a connection ([`guard`]), and failed
//! accepts logged at most every 10 s ([`AcceptErrors`]).
//!
//! hyper's own `header_read_timeout` starts when a connection begins to wait for a request,
//! so on a kept-alive connection it also bounds the idle time between requests; the two need
//! different values (a few seconds for headers, more than a load balancer's idle timeout for
//! keep-alive), so both are kept here. A connection's [`Activity`] tells which applies: it
//! counts the requests whose response is not finished (the service and the response body hold
//! a [`RequestGuard`]) and notes the first byte read while none is.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::metrics::{Metrics, Rejected, TimedOut};

/// "No byte read since the connection went idle."
const NONE: u64 = u64::MAX;

/// The timeouts of a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// From the connection's start or the first byte of a request to its last header.
    pub header: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle: Duration,
}

impl Timeouts {
    pub(super) fn of(config: &ServerConfig) -> Timeouts {
        Timeouts {
            header: config.header_timeout,
            idle: config.idle_timeout,
        }
    }
}

/// What a connection is doing, shared by its IO, its service and its response bodies.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    /// Requests whose response has not finished.
    active: AtomicU32,
    /// Milliseconds from `start` to the end of the last response; 0 before the first.
    idle_since: AtomicU64,
    /// Milliseconds from `start` to the first byte read since the connection went idle, or
    /// [`NONE`].
    first_read: AtomicU64,
    /// True once a response has finished: idle from then on means kept alive.
    served: std::sync::atomic::AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            active: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            first_read: AtomicU64::new(NONE),
            served: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, millis: u64) -> Instant {
        self.start + Duration::from_millis(millis)
    }

    /// A request's headers are in: no timeout of the connection applies until its response
    /// ends.
    pub(super) fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    fn read_some(&self) {
        if self.active.load(Ordering::Relaxed) == 0
            && self.first_read.load(Ordering::Relaxed) == NONE
        {
            self.first_read.store(self.millis(), Ordering::Relaxed);
        }
    }

    /// When the connection times out if nothing changes, and why; `None`: a request is in
    /// progress (its own timeouts apply).
    fn deadline(&self, t: Timeouts) -> Option<(Instant, TimedOut)> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let first = self.first_read.load(Ordering::Relaxed);
        if first != NONE {
            return Some((self.at(first) + t.header, TimedOut::Header));
        }
        let since = self.at(self.idle_since.load(Ordering::Relaxed));
        if self.served.load(Ordering::Relaxed) {
            Some((since + t.idle, TimedOut::Idle))
        } else {
            // A connection that never sent a request has the header timeout from its start.
            Some((since + t.header, TimedOut::Header))
        }
    }
}

/// Held from a request's headers to the end of its response (the service future, then the
/// response body, holds it).
pub(super) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.millis(), Ordering::Relaxed);
        a.first_read.store(NONE, Ordering::Relaxed);
        a.served.store(true, Ordering::Relaxed);
        a.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that releases its request's [`RequestGuard`] when hyper is done with it.
pub(super) struct Tracked<B> {
    pub(super) body: B,
    pub(super) _guard: RequestGuard,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client socket, noting in its [`Activity`] when a request starts to arrive.
pub(super) struct Watched {
    pub(super) stream: TcpStream,
    pub(super) activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Runs `conn` until it ends or its connection times out (then drops it, which closes the
/// socket). The deadline is worked out again after every poll of `conn`: a byte read or a
/// response finished happens inside that poll, on this task. (An HTTP/2 stream finishing on
/// its own task is seen at the next wake-up, at most `idle` later.)
pub(super) async fn guard<F: Future>(
    conn: F,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    metrics: &Metrics,
) {
    let mut conn = std::pin::pin!(conn);
    let sleep = tokio::time::sleep(timeouts.header);
    let mut sleep = std::pin::pin!(sleep);
    let mut armed = sleep.deadline();
    // `armed` is a time to look again at a request in progress, not a timeout.
    let mut look_again = false;
    let timed_out = std::future::poll_fn(|cx| {
        loop {
            if conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            let (deadline, why) = match activity.deadline(timeouts) {
                Some((d, why)) => {
                    look_again = false;
                    (d, Some(why))
                }
                // A request in progress: look again later, when it may have ended (not
                // re-armed on every poll of its body).
                None if look_again => (armed, None),
                None => {
                    look_again = true;
                    (Instant::now() + timeouts.idle, None)
                }
            };
            if deadline != armed {
                sleep.as_mut().reset(deadline);
                armed = deadline;
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if let Some(why) = why {
                return Poll::Ready(Some(why));
            }
            look_again = false;
        }
    })
    .await;
    if let Some(why) = timed_out {
        metrics.connections.timed_out(why);
        tracing::debug!(reason = ?why, "closing a client connection");
    }
}

/// The connection caps of the main listener, checked at accept.
pub(super) struct Caps {
    max: usize,
    per_ip: Option<usize>,
    open: std::sync::atomic::AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<Metrics>,
}

/// One admitted connection; dropping it frees its place.
pub(super) struct Slot {
    caps: Arc<Caps>,
    ip: IpAddr,
}

impl Caps {
    pub(super) fn new(config: &ServerConfig, metrics: Arc<Metrics>) -> Arc<Caps> {
        let max = i64::try_from(config.max_connections).unwrap_or(i64::MAX);
        metrics.connections.max.set(max);
        Arc::new(Caps {
            max: config.max_connections,
            per_ip: config.max_connections_per_ip,
            open: std::sync::atomic::AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// A place for a connection from `ip`, or why there is none (counted).
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let m = &self.metrics.connections;
        m.accepted.add(1);
        // Only the acceptor adds, so a load then an add cannot overshoot.
        if self.open.load(Ordering::Relaxed) >= self.max {
            m.rejected(Rejected::MaxConnections);
            return None;
        }
        if let Some(per_ip) = self.per_ip {
            let mut by_ip = self.by_ip.lock();
            let n = by_ip.entry(ip).or_insert(0);
            if *n >= per_ip {
                m.rejected(Rejected::MaxConnectionsPerIp);
                return None;
            }
            *n += 1;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        m.open.add(1);
        Some(Slot {
            caps: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let caps = &self.caps;
        if caps.per_ip.is_some() {
            let mut by_ip = caps.by_ip.lock();
            if let Some(n) = by_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&self.ip);
                }
            }
        }
        caps.open.fetch_sub(1, Ordering::Relaxed);
        caps.metrics.connections.open.add(-1);
    }
}

/// Failed accepts: counted, logged at most every 10 s with the number left out, and followed
/// by a pause, so that running out of file descriptors neither spins the acceptor nor floods
/// the log (it wrote 763 lines in 40 s).
#[derive(Default)]
pub(super) struct AcceptErrors {
    last_log: Option<Instant>,
    suppressed: u64,
}

/// At most one line this often.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);
/// The pause after a failed accept: the connection waits in the backlog meanwhile, and
/// connections closing in the pause give back descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl AcceptErrors {
    pub(super) async fn failed(&mut self, e: io::Error, metrics: &Metrics) {
        metrics.connections.accept_errors.add(1);
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY)
        {
            self.last_log = Some(Instant::now());
            let suppressed = std::mem::take(&mut self.suppressed);
            tracing::warn!(error = %e, suppressed, "accept failed (logged at most every 10 s; `suppressed` failures since the last line; see llm_gateway_accept_errors_total)");
        } else {
            self.suppressed += 1;
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_timeout_then_idle_between_requests() {
        let t = Timeouts {
            header: Duration::from_secs(5),
            idle: Duration::from_secs(60),
        };
        let a = Activity::new();
        let start = a.start;
        assert_eq!(a.deadline(t), Some((start + t.header, TimedOut::Header)));
        tokio::time::advance(Duration::from_secs(2)).await;
        let g = a.begin();
        assert_eq!(
            a.deadline(t),
            None,
            "no connection timeout during a request"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(g);
        let ended = a.at(a.idle_since.load(Ordering::Relaxed));
        assert_eq!(a.deadline(t), Some((ended + t.idle, TimedOut::Idle)));
        tokio::time::advance(Duration::from_secs(10)).await;
        a.read_some();
        let first = Instant::now();
        assert_eq!(a.deadline(t), Some((first + t.header, TimedOut::Header)));
        a.read_some();
        assert_eq!(
            a.deadline(t),
            Some((first + t.header, TimedOut::Header)),
            "the header timeout runs from the first byte"
        );
    }
}
