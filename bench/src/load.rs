//! The load generator: closed loop, fixed rate with coordinated-omission correction, and many
//! slow streams. HTTP/1.1 keep-alive connections (hyper's low-level client, one connection a
//! task), so the number of connections is exactly what a run says.
//!
//! Every run is bounded: it stops sending at its deadline and abandons whatever is still in
//! flight a grace period later. Targets are loopback addresses only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::Percentiles;

/// Longest a single request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request of a run looks like. The key rotates over `keys`, request by request.
pub struct Workload {
    /// Where to send (always a loopback address).
    pub addr: SocketAddr,
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: &'static str,
    /// Request body.
    pub body: Bytes,
    /// `Authorization` values, one per virtual key.
    pub keys: Vec<HeaderValue>,
    /// Extra headers on every request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// How a streamed answer is framed, to count its events ([`Framing::None`]: not counted).
    pub framing: Framing,
}

/// The framing of a streamed answer, for counting the events a client receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Not counted.
    #[default]
    None,
    /// Server-sent events: one event per blank line (`\n\n`).
    Sse,
    /// AWS event stream: length-prefixed messages (the first 4 bytes, big-endian, are the
    /// message's total length).
    EventStream,
}

/// Counts the events of one streamed body across reads that split them anywhere.
#[derive(Debug, Default)]
pub struct EventCounter {
    framing: Framing,
    /// Events seen whole.
    pub events: u64,
    /// SSE: the previous byte was `\n`. Event stream: bytes of the current message still to
    /// skip.
    newline: bool,
    skip: u64,
    prelude: [u8; 4],
    have: usize,
}

impl EventCounter {
    /// A counter for `framing`.
    pub fn new(framing: Framing) -> EventCounter {
        EventCounter {
            framing,
            ..Default::default()
        }
    }

    /// Takes the next bytes of the body.
    pub fn feed(&mut self, mut data: &[u8]) {
        match self.framing {
            Framing::None => {}
            Framing::Sse => {
                for &b in data {
                    if b == b'\n' {
                        if self.newline {
                            self.events += 1;
                        }
                        self.newline = true;
                    } else if b != b'\r' {
                        self.newline = false;
                    }
                }
            }
            Framing::EventStream => {
                while !data.is_empty() {
                    if self.skip > 0 {
                        let n = (self.skip as usize).min(data.len());
                        self.skip -= n as u64;
                        data = &data[n..];
                        continue;
                    }
                    self.prelude[self.have] = data[0];
                    self.have += 1;
                    data = &data[1..];
                    if self.have == 4 {
                        self.have = 0;
                        self.events += 1;
                        // The 4 length bytes are part of the total.
                        self.skip = u64::from(u32::from_be_bytes(self.prelude)).saturating_sub(4);
                    }
                }
            }
        }
    }
}

impl Workload {
    fn request(&self, i: u64) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = http::Uri::from_static(self.path);
        let h = req.headers_mut();
        if let Ok(host) = HeaderValue::from_str(&self.addr.to_string()) {
            h.insert(header::HOST, host);
        }
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if !self.keys.is_empty() {
            let k = &self.keys[(i % self.keys.len() as u64) as usize];
            h.insert(header::AUTHORIZATION, k.clone());
        }
        for (n, v) in &self.headers {
            h.insert(n.clone(), v.clone());
        }
        req
    }
}

/// Refuses anything but loopback: the benchmark never sends traffic off this machine.
pub fn check_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!("refusing to send load to {addr}: loopback only"))
    }
}

struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        let alive = match &mut self.sender {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !alive {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| "no connection".to_string())
    }

    /// Sends one request and reads the whole response. With `first_byte`, records when the
    /// first body bytes arrived. Returns whether the status was 2xx.
    async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
        mut first_byte: Option<&mut Option<Instant>>,
        mut events: Option<&mut EventCounter>,
    ) -> Result<bool, String> {
        let sender = self.sender().await?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(e.to_string());
            }
        };
        let ok = resp.status().is_success();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let (Some(c), Some(d)) = (events.as_deref_mut(), f.data_ref()) {
                        c.feed(d);
                    }
                    if let Some(fb) = first_byte.as_deref_mut()
                        && fb.is_none()
                        && f.data_ref().is_some_and(|d| !d.is_empty())
                    {
                        *fb = Some(Instant::now());
                    }
                }
                Err(e) => {
                    self.sender = None;
                    return Err(e.to_string());
                }
            }
        }
        Ok(ok)
    }
}

/// What a closed-loop run measured.
#[derive(Debug, Default)]
pub struct ClosedOutcome {
    /// Responses with a 2xx status completed inside the window.
    pub ok: u64,
    /// Failures and non-2xx responses.
    pub errors: u64,
    /// Length of the measuring window.
    pub elapsed: Duration,
    /// Latency of the successful requests (not corrected: each connection waits for its
    /// answer before sending the next request).
    pub latency: Percentiles,
    /// Every latency sample, nanoseconds, sorted (to merge runs).
    pub samples: Vec<u64>,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

/// `connections` connections, each sending its next request as soon as the previous answer is
/// in, for `duration` or until `max_requests` were sent in all.
pub async fn closed_loop(
    w: Arc<Workload>,
    connections: usize,
    duration: Duration,
    max_requests: Option<u64>,
) -> ClosedOutcome {
    let start = Instant::now();
    let deadline = start + duration;
    let hard = deadline + REQUEST_TIMEOUT;
    let next = Arc::new(AtomicU64::new(0));
    let limit = max_requests.unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let w = w.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(w.addr);
            let mut lat = Vec::new();
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit || Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                let r =
                    tokio::time::timeout_at(hard.into(), conn.exchange(w.request(i), None, None))
                        .await
                        .unwrap_or_else(|_| Err("timed out".into()));
                match r {
                    Ok(true) => lat.push(t.elapsed().as_nanos() as u64),
                    Ok(false) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| "non-2xx status".to_string());
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        // Do not spin on a dead target.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut out = ClosedOutcome::default();
    let mut all = Vec::new();
    for t in tasks {
        if let Ok((lat, errors, first)) = t.await {
            all.extend(lat);
            out.errors += errors;
            if out.first_error.is_none() {
                out.first_error = first;
            }
        }
    }
    out.elapsed = start.elapsed().min(duration.max(Duration::from_millis(1)));
    if max_requests.is_some() {
        out.elapsed = start.elapsed();
    }
    out.ok = all.len() as u64;
    out.latency = Percentiles::of(&mut all);
    out.samples = all;
    out
}

/// What a fixed-rate run measured.
#[derive(Debug, Default)]
pub struct FixedOutcome {
    /// Requests the schedule asked for.
    pub scheduled: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Failures and non-2xx responses.
    pub errors: u64,
    /// Scheduled requests never answered before the run's hard stop (the target fell behind).
    pub incomplete: u64,
    /// From the first scheduled send to the last answer.
    pub elapsed: Duration,
    /// Latency from each request's *scheduled* send time to its full answer: a request that
    /// waited for a free connection counts that wait (coordinated-omission correction).
    pub latency: Percentiles,
    /// How late the pacer thread released requests (timer wake-up; a floor on the latency).
    pub pacer_lag: Percentiles,
    /// The first error seen.
    pub first_error: Option<String>,
    /// Every answered request's latency, ns (for pooling rounds).
    pub samples: Vec<u64>,
    /// Every release's pacer lag, ns.
    pub lags: Vec<u64>,
}

/// Sends `rate` requests a second for `duration` over `connections` keep-alive connections.
/// A pacer thread releases request i at `start + i/rate`; a free connection picks it up; when
/// none is free the request waits in the queue and its latency still counts from its scheduled
/// time (wrk2's correction). Stops sending at the end of the schedule and gives up on what is
/// left `grace` later.
pub async fn fixed_rate(
    w: Arc<Workload>,
    rate: u32,
    duration: Duration,
    connections: usize,
    grace: Duration,
) -> FixedOutcome {
    let rate = rate.max(1);
    let total = (u128::from(rate) * duration.as_nanos() / 1_000_000_000) as u64;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    // Connections are opened before the schedule starts.
    let mut conns = Vec::new();
    for _ in 0..connections {
        let mut c = Conn::new(w.addr);
        let _ = c.sender().await;
        conns.push(c);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let hard = start + duration + grace;
    let pacer = std::thread::spawn(move || {
        let mut lags = Vec::with_capacity(total as usize);
        for i in 0..total {
            let at = start
                + Duration::from_nanos((u128::from(i) * 1_000_000_000 / u128::from(rate)) as u64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            lags.push(Instant::now().saturating_duration_since(at).as_nanos() as u64);
            if tx.send((i, at)).is_err() {
                break;
            }
        }
        lags
    });
    let mut tasks = Vec::new();
    for mut conn in conns {
        let w = w.clone();
        let rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut errors, mut incomplete, mut first_error) = (0u64, 0u64, None);
            let mut last = start;
            loop {
                let item = {
                    let mut rx = rx.lock().await;
                    rx.recv().await
                };
                let Some((i, at)) = item else { break };
                if Instant::now() >= hard {
                    incomplete += 1;
                    continue;
                }
                match tokio::time::timeout_at(hard.into(), conn.exchange(w.request(i), None, None))
                    .await
                {
                    Err(_) => incomplete += 1,
                    Ok(Ok(true)) => {
                        last = Instant::now();
                        lat.push(last.saturating_duration_since(at).as_nanos() as u64);
                    }
                    Ok(Ok(false)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| "non-2xx status".to_string());
                    }
                    Ok(Err(e)) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, errors, incomplete, first_error, last)
        }));
    }
    let mut out = FixedOutcome {
        scheduled: total,
        ..Default::default()
    };
    let mut all = Vec::new();
    let mut last = start;
    for t in tasks {
        if let Ok((lat, errors, incomplete, first, l)) = t.await {
            all.extend(lat);
            out.errors += errors;
            out.incomplete += incomplete;
            last = last.max(l);
            if out.first_error.is_none() {
                out.first_error = first;
            }
        }
    }
    let mut lags = pacer.join().unwrap_or_default();
    out.ok = all.len() as u64;
    out.elapsed = last.saturating_duration_since(start);
    out.latency = Percentiles::of(&mut all);
    out.pacer_lag = Percentiles::of(&mut lags);
    out.samples = all;
    out.lags = lags;
    out
}

/// What the streaming run measured.
#[derive(Debug, Default)]
pub struct StreamOutcome {
    /// Streams begun.
    pub started: u64,
    /// Streams read to their end with a 2xx status.
    pub completed: u64,
    /// Failed streams.
    pub errors: u64,
    /// Time to first body byte of the streams begun while every slot was open.
    pub ttft: Percentiles,
    /// The most streams open at one time.
    pub max_open: u64,
    /// Events received over all streams (counted by the workload's [`Framing`]).
    pub events: u64,
    /// The first error seen.
    pub first_error: Option<String>,
}

/// Shared with the caller during a stream run, so it can sample memory while streams are open.
#[derive(Default)]
pub struct OpenStreams(AtomicUsize, AtomicUsize);

impl OpenStreams {
    /// Streams open right now.
    pub fn now(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// `slots` clients, each streaming one response after another for `duration`. Slot k begins
/// `k * stream_len / slots` after the start, so once every slot has begun about `slots` streams
/// are open at any moment and new ones begin evenly. Time to first byte is recorded for the
/// streams begun after that ramp.
pub async fn streams(
    w: Arc<Workload>,
    slots: usize,
    stream_len: Duration,
    duration: Duration,
    open: Arc<OpenStreams>,
) -> StreamOutcome {
    let start = Instant::now();
    let ramp_end = start + stream_len;
    let deadline = start + stream_len + duration;
    let hard = deadline + stream_len + REQUEST_TIMEOUT;
    let started = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for k in 0..slots {
        let w = w.clone();
        let open = open.clone();
        let started = started.clone();
        let offset = stream_len.mul_f64(k as f64 / slots as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((start + offset).into()).await;
            let mut conn = Conn::new(w.addr);
            let mut ttft = Vec::new();
            let (mut completed, mut errors, mut first_error) = (0u64, 0u64, None);
            let mut events = 0u64;
            while Instant::now() < deadline {
                let i = started.fetch_add(1, Ordering::Relaxed);
                let n = open.0.fetch_add(1, Ordering::Relaxed) + 1;
                open.1.fetch_max(n, Ordering::Relaxed);
                let t = Instant::now();
                let mut fb = None;
                let mut counter = EventCounter::new(w.framing);
                let r = tokio::time::timeout_at(
                    hard.into(),
                    conn.exchange(w.request(i), Some(&mut fb), Some(&mut counter)),
                )
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
                open.0.fetch_sub(1, Ordering::Relaxed);
                // A stream cut short cost the proxy its events too: all are counted.
                events += counter.events;
                match r {
                    Ok(true) => {
                        completed += 1;
                        if t >= ramp_end
                            && let Some(fb) = fb
                        {
                            ttft.push(fb.saturating_duration_since(t).as_nanos() as u64);
                        }
                    }
                    Ok(false) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| "non-2xx status".to_string());
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (ttft, completed, errors, first_error, events)
        }));
    }
    let mut out = StreamOutcome::default();
    let mut all = Vec::new();
    for t in tasks {
        if let Ok((ttft, completed, errors, first, events)) = t.await {
            all.extend(ttft);
            out.events += events;
            out.completed += completed;
            out.errors += errors;
            if out.first_error.is_none() {
                out.first_error = first;
            }
        }
    }
    out.started = started.load(Ordering::Relaxed);
    out.max_open = open.1.load(Ordering::Relaxed) as u64;
    out.ttft = Percentiles::of(&mut all);
    out
}

/// One request of `w`; the size of the answer's body if it was 2xx.
pub async fn probe(w: &Workload) -> Result<usize, String> {
    probe_body(w).await.map(|b| b.len())
}

/// One request of `w`; the answer's body if it was 2xx.
pub async fn probe_body(w: &Workload) -> Result<Bytes, String> {
    let mut conn = Conn::new(w.addr);
    let sender = conn.sender().await?;
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(w.request(0)))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ))
    }
}

/// `GET path` on `addr`; the body as text.
pub async fn get(addr: SocketAddr, path: &'static str) -> Result<String, String> {
    check_loopback(addr)?;
    let mut conn = Conn::new(addr);
    let sender = conn.sender().await?;
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = http::Uri::from_static(path);
    if let Ok(host) = HeaderValue::from_str(&addr.to_string()) {
        req.headers_mut().insert(header::HOST, host);
    }
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_across_any_split() {
        let sse = b"data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        let mut es = Vec::new();
        for len in [16u32, 20, 17] {
            es.extend_from_slice(&len.to_be_bytes());
            es.extend(std::iter::repeat_n(0xAB, len as usize - 4));
        }
        for (framing, body) in [(Framing::Sse, &sse[..]), (Framing::EventStream, &es[..])] {
            for cut in 0..body.len() {
                let mut c = EventCounter::new(framing);
                c.feed(&body[..cut]);
                c.feed(&body[cut..]);
                assert_eq!(c.events, 3, "{framing:?} cut at {cut}");
            }
            let mut c = EventCounter::new(framing);
            for b in body {
                c.feed(std::slice::from_ref(b));
            }
            assert_eq!(c.events, 3, "{framing:?} byte by byte");
        }
        let mut none = EventCounter::new(Framing::None);
        none.feed(sse);
        assert_eq!(none.events, 0);
    }
}
