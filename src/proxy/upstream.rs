//! Upstream connections. A worker thread (`server::workers`) keeps its own HTTP/1.1 keep-alive
//! connections to plain-HTTP upstreams (self-hosted vLLM, Ollama, sidecars, the simulator) in a
//! pool that only it touches: no lock, no task per request. A request borrows a connection
//! ([`Lease`]) and the response body gives it back once it has been read to its end, as nginx's
//! `keepalive` upstreams do. hyper-util's pooled client, which the gateway used for every
//! upstream before, spawns a task per request to notice when a connection is idle again and
//! locks its pool twice per request.
//!
//! TLS upstreams (the hosted providers) and threads without a worker pool use hyper-util's
//! client: HTTP/2 by ALPN where the provider offers it, TLS by rustls.

use std::cell::{OnceCell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// The client for TLS upstreams: one pool for all providers, HTTP/1.1 and h2, TLS by rustls.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Idle connections kept per upstream host and worker.
const MAX_IDLE_PER_HOST: usize = 1024;
/// An idle connection unused this long is closed (upstreams close theirs too, often sooner).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Time allowed for a TCP connect, within the route's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the client for TLS upstreams. `TCP_NODELAY` is set: without it a keep-alive request
/// can stall ~40 ms on Nagle's algorithm meeting delayed ACKs.
pub fn tls_client() -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        .build(https)
}

/// Why an upstream request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No TCP connection could be made.
    Connect(String),
    /// The connection failed while the request was sent or the response head read.
    Http(hyper::Error),
    /// hyper-util's client failed (TLS upstreams).
    Client(hyper_util::client::legacy::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect failed: {e}"),
            SendError::Http(e) => write!(f, "{e}"),
            SendError::Client(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(_) => None,
            SendError::Http(e) => e.source(),
            SendError::Client(e) => std::error::Error::source(e),
        }
    }
}

/// A pooled connection in use by one request. Give it back with [`Lease::release`] once the
/// response body has been read to its end; dropping it instead closes the connection (a body
/// left half-read cannot be followed by another request).
pub struct Lease {
    /// The pool it came from ([`Pool::id`]) and its upstream's place there.
    pool: u64,
    host: usize,
    sender: SendRequest<Full<Bytes>>,
}

impl Lease {
    /// Returns the connection to its worker's pool.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        POOL.with(|p| {
            if let Some(pool) = p.borrow_mut().as_mut()
                && pool.id == self.pool
                && let Some(host) = pool.hosts.get_mut(self.host)
                && host.idle.len() < MAX_IDLE_PER_HOST
            {
                host.idle.push(Idle {
                    sender: self.sender,
                    since: Instant::now(),
                });
            }
        });
    }
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// What the pool keeps for one upstream `host:port`.
struct Host {
    authority: Authority,
    /// The `Host` header of its requests.
    header: HeaderValue,
    /// Most recently used last.
    idle: Vec<Idle>,
}

/// A worker's upstreams, each at a fixed place in `hosts` for the life of the thread: a
/// lease remembers the place, so giving a connection back hashes nothing. Checkout finds the
/// place by the authority's text, hashed in one pass (foldhash); keyed by `Authority` the
/// map hashed it with SipHash a byte at a time (its `Hash` lowercases each byte), 38 hash
/// writes a request between checkout and release.
struct Pool {
    /// Unique in the process, so a lease is never given back to another thread's pool.
    id: u64,
    index: hashbrown::HashMap<Box<str>, usize>,
    hosts: Vec<Host>,
}

impl Pool {
    fn new() -> Pool {
        static IDS: AtomicU64 = AtomicU64::new(1);
        Pool {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            index: hashbrown::HashMap::new(),
            hosts: Vec::new(),
        }
    }

    /// The place of `authority`'s connections, made on its first request.
    fn place(&mut self, authority: &Authority) -> usize {
        if let Some(&i) = self.index.get(authority.as_str()) {
            return i;
        }
        let i = self.hosts.len();
        self.hosts.push(Host {
            authority: authority.clone(),
            header: host_header(authority),
            idle: Vec::new(),
        });
        self.index.insert(authority.as_str().into(), i);
        i
    }
}

thread_local! {
    /// The HTTP/1.1 pool of a worker thread; `None` on other threads.
    static POOL: RefCell<Option<Pool>> = const { RefCell::new(None) };
    /// The TLS client of a worker thread: its connections are driven by that thread's runtime,
    /// so a request never waits on another thread's.
    static TLS_CLIENT: OnceCell<UpstreamClient> = const { OnceCell::new() };
}

/// Gives the calling thread its own upstream connections, used by every request it handles.
/// For threads that each run a single-threaded runtime.
pub fn use_worker_pool() {
    POOL.with(|p| *p.borrow_mut() = Some(Pool::new()));
    TLS_CLIENT.with(|c| {
        let _ = c.set(tls_client());
    });
}

/// Closes this worker's connections idle for longer than [`IDLE_TIMEOUT`] and forgets those
/// the upstream closed. Called about once a second.
pub fn sweep() {
    POOL.with(|p| {
        if let Some(pool) = p.borrow_mut().as_mut() {
            for host in &mut pool.hosts {
                host.idle
                    .retain(|i| !i.sender.is_closed() && i.since.elapsed() < IDLE_TIMEOUT);
            }
        }
    });
}

/// Sends `req` (an absolute URI) upstream and returns the response head, with the connection
/// to give back when the body has been read, if it came from a worker's pool.
pub async fn send(
    fallback: &UpstreamClient,
    mut req: Request<Full<Bytes>>,
) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
    let pooled = match req.uri().authority() {
        Some(a) if req.uri().scheme() == Some(&Scheme::HTTP) => {
            POOL.with(|p| p.borrow_mut().as_mut().map(|pool| (pool.id, pool.place(a))))
        }
        _ => None,
    };
    let Some((pool, place)) = pooled else {
        let call = TLS_CLIENT.with(|c| c.get().unwrap_or(fallback).request(req));
        return call.await.map(|r| (r, None)).map_err(SendError::Client);
    };
    *req.uri_mut() = origin_form(req.uri());
    loop {
        // The pool is borrowed only between awaits; `place` stays valid in it (hosts are only
        // ever added), and the authority is cloned only to connect.
        let (idle, host) = POOL
            .with(|p| {
                let mut p = p.borrow_mut();
                let host = p
                    .as_mut()
                    .filter(|p| p.id == pool)
                    .and_then(|p| p.hosts.get_mut(place))?;
                let mut found = None;
                while let Some(i) = host.idle.pop() {
                    if !i.sender.is_closed() {
                        found = Some(i.sender);
                        break;
                    }
                }
                let checkout = match found {
                    Some(s) => Checkout::Idle(s),
                    None => Checkout::Connect(host.authority.clone()),
                };
                Some((checkout, host.header.clone()))
            })
            .ok_or_else(|| SendError::Connect("the worker's upstream pool is gone".into()))?;
        req.headers_mut().insert(header::HOST, host);
        let reused = matches!(idle, Checkout::Idle(_));
        let mut sender = match idle {
            Checkout::Idle(s) => s,
            Checkout::Connect(authority) => connect(&authority).await?,
        };
        if let Err(e) = sender.ready().await {
            if reused {
                continue; // closed while idle: take another
            }
            return Err(SendError::Http(e));
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let lease = Lease {
                    pool,
                    host: place,
                    sender,
                };
                return Ok((resp, Some(lease)));
            }
            Err(mut e) => match e.take_message() {
                // Never written: the idle connection was closing. Safe to send again.
                Some(r) if reused => req = r,
                _ => return Err(SendError::Http(e.into_error())),
            },
        }
    }
}

/// What a request takes from the pool: an idle connection, or the address to connect to.
enum Checkout {
    Idle(SendRequest<Full<Bytes>>),
    Connect(Authority),
}

/// `/path?query` of an absolute URI: what goes on an HTTP/1.1 request line to an origin.
fn origin_form(uri: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = uri.path_and_query().cloned();
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

fn host_header(authority: &Authority) -> HeaderValue {
    HeaderValue::from_str(authority.as_str()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A new HTTP/1.1 connection to `authority`, driven by a task on the calling thread's runtime.
async fn connect(authority: &Authority) -> Result<SendRequest<Full<Bytes>>, SendError> {
    let host = authority.host();
    // An IPv6 literal comes bracketed in a URI.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(SendError::Connect(format!("{authority}: {e}"))),
        Err(_) => {
            return Err(SendError::Connect(format!(
                "{authority}: no answer within {CONNECT_TIMEOUT:?}"
            )));
        }
    };
    stream
        .set_nodelay(true)
        .map_err(|e| SendError::Connect(format!("{authority}: {e}")))?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_and_host_of_an_absolute_uri() {
        let uri: Uri = "http://127.0.0.1:8000/v1/chat/completions?x=1"
            .parse()
            .expect("uri");
        assert_eq!(origin_form(&uri).to_string(), "/v1/chat/completions?x=1");
        let a = uri.authority().expect("authority");
        assert_eq!(host_header(a), "127.0.0.1:8000");
    }
}
