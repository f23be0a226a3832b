//! Shared test harness: in-process gateways on port 0, mock upstreams, a client, and a
//! Prometheus text parser.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tollgate::config::Config;
use tollgate::proxy::Gateway;
use tollgate::server;

/// A gateway running in this process.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start(config_text: &str) -> TestGateway {
        let vars: HashMap<String, String> = HashMap::new();
        let config = Config::from_toml(config_text, &vars).expect("test config is valid");
        TestGateway::serve(Gateway::new(config).expect("gateway")).await
    }

    /// A gateway whose `[ledger]` is opened as `tollgate serve` opens it.
    pub async fn start_with_ledger(config_text: &str) -> TestGateway {
        let vars: HashMap<String, String> = HashMap::new();
        let config = Config::from_toml(config_text, &vars).expect("test config is valid");
        let metrics = tollgate::metrics::Metrics::new(&config.metrics.options);
        let ledger =
            tollgate::ledger::Ledger::open(&config.ledger, metrics.clone()).expect("ledger opens");
        TestGateway::serve(Gateway::with_ledger(config, metrics, ledger).expect("gateway")).await
    }

    async fn serve(gateway: Arc<Gateway>) -> TestGateway {
        TestGateway::serve_with_grace(gateway, Duration::from_secs(5)).await
    }

    /// A gateway whose shutdown grace period is `grace` (5 s otherwise).
    pub async fn start_with_grace(config_text: &str, grace: Duration) -> TestGateway {
        let vars: HashMap<String, String> = HashMap::new();
        let config = Config::from_toml(config_text, &vars).expect("test config is valid");
        TestGateway::serve_with_grace(Gateway::new(config).expect("gateway"), grace).await
    }

    async fn serve_with_grace(gateway: Arc<Gateway>, grace: Duration) -> TestGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let routes = server::main_routes(gateway.clone());
        // Served as `tollgate serve` serves: two worker threads, each with its own runtime.
        let server = tokio::spawn(async move {
            server::run_workers(
                listener,
                routes,
                2,
                async move {
                    let _ = rx.await;
                },
                grace,
            )
            .await
            .expect("workers start");
        });
        TestGateway {
            addr,
            gateway,
            stop: Some(tx),
            server: Some(server),
        }
    }

    /// Stops as `tollgate serve` does on SIGTERM: no new connections, requests in flight
    /// finish, then the ledger writes everything it holds.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
        self.gateway.ledger.close().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The gateway's metrics, scraped over HTTP.
    pub async fn scrape(&self) -> Scrape {
        let (status, _, body) = get(&self.url("/metrics"), &[]).await;
        assert_eq!(status, 200);
        Scrape::parse(&String::from_utf8_lossy(&body))
    }

    /// Waits until `requests_total` reaches `n` (settlement of a dropped stream is async), and
    /// returns a scrape taken after that: the gateway counts a request in `requests_total`
    /// last, and a scrape reads the families one after another, so only the next scrape is
    /// sure to hold all the series of the requests counted.
    pub async fn wait_requests(&self, n: f64) -> Scrape {
        // Generous: under a loaded machine the first estimate also builds the tokenizer.
        for _ in 0..1500 {
            let s = self.scrape().await;
            if s.sum("llm_gateway_requests_total", &[]) >= n {
                return self.scrape().await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "requests_total never reached {n}: {:?}",
            self.scrape().await.samples
        );
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// What a mock upstream answers.
#[derive(Clone)]
pub struct MockReply {
    pub status: u16,
    pub content_type: String,
    /// Each element is sent as one body frame.
    pub frames: Vec<Bytes>,
    /// Break the connection after the frames instead of ending the body.
    pub cut: bool,
    /// Delay between frames.
    pub frame_delay: Duration,
}

/// What a mock upstream saw.
#[derive(Default, Clone, Debug)]
pub struct Seen {
    pub headers: Vec<HeaderMap>,
    pub bodies: Vec<Bytes>,
    /// Paths with their query strings.
    pub paths: Vec<String>,
    /// TCP connections accepted.
    pub connections: usize,
}

/// A mock upstream on port 0 that answers every request with `reply` and records requests.
pub async fn mock_upstream(reply: MockReply) -> (SocketAddr, Arc<Mutex<Seen>>) {
    mock_upstream_with(reply, true).await
}

/// A mock upstream that closes each connection after one response (`keep_alive` false).
pub async fn mock_upstream_with(
    reply: MockReply,
    keep_alive: bool,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            seen2.lock().expect("lock").connections += 1;
            let reply = reply.clone();
            let seen = seen2.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let reply = reply.clone();
                let seen = seen.clone();
                async move {
                    let path = req
                        .uri()
                        .path_and_query()
                        .map_or_else(String::new, |p| p.to_string());
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    {
                        let mut s = seen.lock().expect("lock");
                        s.headers.push(parts.headers);
                        s.bodies.push(body);
                        s.paths.push(path);
                    }
                    Ok::<_, Infallible>(reply_response(reply))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

type MockBody = BoxBody<Bytes, std::io::Error>;

fn reply_response(reply: MockReply) -> Response<MockBody> {
    let frames = reply.frames.clone();
    let cut = reply.cut;
    let delay = reply.frame_delay;
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let frames = frames.clone();
        async move {
            if i < frames.len() {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                return Some((Ok(Frame::data(frames[i].clone())), i + 1));
            }
            if cut && i == frames.len() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                return Some((Err(std::io::Error::other("cut")), i + 1));
            }
            None
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *resp.status_mut() = http::StatusCode::from_u16(reply.status).expect("status");
    resp.headers_mut()
        .insert("content-type", reply.content_type.parse().expect("ct"));
    resp
}

fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// POSTs `body` with `headers`; returns status, headers and the whole body.
pub async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, HeaderMap, Bytes) {
    read_whole(post_streaming(url, headers, body).await).await
}

/// POSTs and returns the response with its body unread.
pub async fn post_streaming(url: &str, headers: &[(&str, &str)], body: &str) -> Response<Incoming> {
    let req = Request::post(url).header("content-type", "application/json");
    send(req, headers, Bytes::from(body.to_string())).await
}

/// GETs `url`.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Bytes) {
    read_whole(send(Request::get(url), headers, Bytes::new()).await).await
}

async fn send(
    mut req: http::request::Builder,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Response<Incoming> {
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).expect("request");
    client().request(req).await.expect("gateway answers")
}

async fn read_whole(resp: Response<Incoming>) -> (u16, HeaderMap, Bytes) {
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, h, body)
}

/// A parsed scrape: (name, labels, value).
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

/// One sample: name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (head, vec![]),
            };
            samples.push((name.to_string(), labels, value));
        }
        Scrape { samples }
    }

    /// Sum of `name` over series whose labels include all of `matchers`.
    pub fn sum(&self, name: &str, matchers: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && matchers
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((k.trim_start_matches(',').to_string(), value));
        rest = &after[end..];
    }
    out
}

/// Splits an SSE body into its events (each ending with the blank line), for frame-by-frame
/// replay.
pub fn sse_events(body: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < body.len() {
        if body[i] == b'\n' && body[i + 1] == b'\n' {
            out.push(Bytes::copy_from_slice(&body[start..i + 2]));
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if start < body.len() {
        out.push(Bytes::copy_from_slice(&body[start..]));
    }
    out
}
