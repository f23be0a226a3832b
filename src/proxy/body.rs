//! Reading a request body: at most `server.max_body_bytes`, within `server.body_timeout_secs`.
//!
//! A body over the limit is read on and thrown away (up to [`drain_bound`], within
//! [`DRAIN_TIME`]) before the 413 is sent: a client that writes its whole body before it
//! reads (most do) otherwise meets a closed socket, and the reset that closing with unread
//! bytes sends can destroy the 413 before the client reads it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{Gateway, ProxyError};
use crate::metrics::TimedOut;

/// Read: the request body, bounded by `server.max_body_bytes` and `body_timeout_secs`.
pub(super) async fn read_request(
    gw: &Gateway,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<Bytes, ProxyError> {
    let server = &gw.config.server;
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let expects_continue = headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let read = read(
        body,
        announced,
        expects_continue,
        server.max_body_bytes,
        server.body_timeout,
    );
    let read = read.await;
    if let Err(ProxyError::BodyTimeout { .. }) = &read {
        gw.metrics.connections.timed_out(TimedOut::Body);
    }
    read
}

/// The longest a too-large body is read for before the 413 goes out anyway.
pub(super) const DRAIN_TIME: Duration = Duration::from_secs(10);

/// How much of a too-large body is read and thrown away: twice the limit, at least 4 MiB.
/// A body announced larger is answered at once (reading it would not help the client).
pub(super) fn drain_bound(limit: usize) -> u64 {
    (limit as u64).saturating_mul(2).max(4 << 20)
}

/// Reads `body` whole, or fails: over `limit` bytes (announced, `announced`, or sent), or
/// not complete within `timeout`. `expects_continue`: the client sent `Expect: 100-continue`
/// and waits before sending the body (reading it would tell hyper to ask for it).
pub(crate) async fn read(
    mut body: Incoming,
    announced: Option<u64>,
    expects_continue: bool,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ProxyError> {
    let too_large = ProxyError::BodyTooLarge { limit };
    if let Some(n) = announced
        && n > limit as u64
    {
        if n <= drain_bound(limit) && !expects_continue {
            drain(&mut body, n).await;
        }
        return Err(too_large);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut len = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ProxyError::BodyTimeout { timeout }),
            Ok(None) => break,
            Ok(Some(Err(e))) if client_left(&e) => return Err(ProxyError::ClientGone),
            Ok(Some(Err(e))) => return Err(ProxyError::BodyRead(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(data.len());
        if len > limit {
            drain(&mut body, drain_bound(limit)).await;
            return Err(too_large);
        }
        // One frame (the usual case) is kept as it came, without a copy.
        match &first {
            None => first = Some(data),
            Some(f) => {
                if rest.is_empty() {
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        rest.freeze()
    })
}

/// Reads and drops up to `bound` more bytes of `body`, for at most [`DRAIN_TIME`].
async fn drain(body: &mut Incoming, bound: u64) {
    let mut read = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while read <= bound {
            match body.frame().await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len() as u64),
                _ => return,
            }
        }
    })
    .await;
}

/// True when a body read failed because the client closed its connection early: hyper says
/// `IncompleteBody` under an `UnexpectedEof` I/O error (or a reset, or an incomplete message).
fn client_left(e: &hyper::Error) -> bool {
    use std::error::Error as _;
    if e.is_incomplete_message() || e.is_closed() {
        return true;
    }
    e.source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
            )
        })
}
