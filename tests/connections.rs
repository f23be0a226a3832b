//! Client connections: slow headers and idle keep-alive connections are closed after their
//! timeouts, the connection caps refuse extra connections at once, and real requests go
//! through all along. Raw sockets, so that the test controls every byte.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use support::TestGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tollgate::sim::{self, SimOptions};

async fn start_sim() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(sim::serve(l, SimOptions::default(), std::future::pending()));
    addr
}

fn config(sim: SocketAddr, server: &str) -> String {
    format!(
        r#"
[server]
{server}

[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "http://{sim}/v1"
api_key = "sk-sim"
models = ["gpt-4o-mini"]
"#
    )
}

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":4}"#;

fn chat_request(keep_alive: bool) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {}\r\n\r\n{CHAT}",
        CHAT.len(),
        if keep_alive { "keep-alive" } else { "close" }
    )
}

async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let ip: IpAddr = ip.parse().expect("ip");
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(ip, 0)).expect("bind source");
    socket.connect(to).await.expect("connect")
}

/// Reads one HTTP/1.1 response with a `content-length` body; returns its status.
async fn read_response(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response within 10 s")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                return head[9..12].parse().expect("status");
            }
        }
    }
}

/// One request on a fresh connection from `ip`; its status.
async fn request_from(ip: &str, gw: SocketAddr) -> u16 {
    let mut s = connect_from(ip, gw).await;
    s.write_all(chat_request(false).as_bytes())
        .await
        .expect("write");
    read_response(&mut s).await
}

/// True when the peer closed `s` within `within` (end of stream or reset).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 1];
    match tokio::time::timeout(within, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("unexpected bytes from the gateway"),
        Err(_) => false,
    }
}

/// A scrape over a raw connection (the shared client's connections would count too).
async fn metric(gw: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut s = TcpStream::connect(gw).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out);
    let body = text.split_once("\r\n\r\n").expect("body").1;
    support::Scrape::parse(body).sum(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_at_the_header_timeout_while_real_requests_pass() {
    let sim = start_sim().await;
    let gw = TestGateway::start(&config(
        sim,
        "header_timeout_secs = 1\nidle_timeout_secs = 30",
    ))
    .await;
    // 200 clients trickle a request head, a byte every 200 ms; 50 more send nothing at all.
    const TRICKLERS: usize = 200;
    let head = chat_request(true).into_bytes();
    let mut tricklers = Vec::new();
    for _ in 0..TRICKLERS {
        let mut s = TcpStream::connect(gw.addr).await.expect("connect");
        let head = head.clone();
        tricklers.push(tokio::spawn(async move {
            let start = Instant::now();
            for b in head.iter().take(40) {
                if s.write_all(&[*b]).await.is_err() {
                    return start.elapsed();
                }
                let mut probe = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(200), s.read(&mut probe)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
                    Ok(Ok(_)) => panic!("the gateway answered a partial head"),
                    Err(_) => {}
                }
            }
            panic!("still open after 40 bytes over 8 s");
        }));
    }
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(gw.addr).await.expect("connect"));
    }
    // Real requests meanwhile.
    for _ in 0..5 {
        assert_eq!(request_from("127.0.0.1", gw.addr).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in tricklers {
        let held = t.await.expect("trickler");
        assert!(
            held >= Duration::from_millis(900) && held < Duration::from_secs(4),
            "a slow head was held {held:?} (header timeout 1 s)"
        );
    }
    for mut s in silent {
        assert!(
            closed_within(&mut s, Duration::from_secs(3)).await,
            "a connection that sent nothing stayed open"
        );
    }
    assert_eq!(request_from("127.0.0.1", gw.addr).await, 200);
    let cut = metric(
        gw.addr,
        "llm_gateway_connections_timed_out_total",
        &[("reason", "header_timeout")],
    )
    .await;
    assert!(cut >= 250.0, "header timeouts counted: {cut}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let sim = start_sim().await;
    let gw = TestGateway::start(&config(
        sim,
        "header_timeout_secs = 1\nidle_timeout_secs = 3",
    ))
    .await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(chat_request(true).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut s).await, 200);
    // Idle past the header timeout: still open, and it serves the next request.
    assert!(!closed_within(&mut s, Duration::from_millis(2000)).await);
    s.write_all(chat_request(true).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut s).await, 200);
    let idle_from = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(6)).await,
        "idle connection kept past the idle timeout"
    );
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(2800) && idle < Duration::from_millis(4500),
        "closed after {idle:?} idle (idle timeout 3 s)"
    );
    let n = metric(
        gw.addr,
        "llm_gateway_connections_timed_out_total",
        &[("reason", "idle_timeout")],
    )
    .await;
    assert_eq!(n, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_caps_refuse_extra_connections_at_once_and_free_their_places() {
    let sim = start_sim().await;
    let gw = TestGateway::start(&config(
        sim,
        "header_timeout_secs = 30\nmax_connections = 10\nmax_connections_per_ip = 4",
    ))
    .await;
    // Four idle connections from 127.0.0.1: its share.
    let mut first = Vec::new();
    for _ in 0..4 {
        first.push(connect_from("127.0.0.1", gw.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = connect_from("127.0.0.1", gw.addr).await;
    assert!(
        closed_within(&mut fifth, Duration::from_secs(2)).await,
        "a fifth connection from one address was kept"
    );
    // Another address still gets in, and its request is served.
    assert_eq!(request_from("127.0.0.2", gw.addr).await, 200);
    // Fill the gateway: 4 + 4 + 2 = 10.
    let mut others = Vec::new();
    for ip in ["127.0.0.3", "127.0.0.3", "127.0.0.3", "127.0.0.3"] {
        others.push(connect_from(ip, gw.addr).await);
    }
    for ip in ["127.0.0.4", "127.0.0.4"] {
        others.push(connect_from(ip, gw.addr).await);
    }
    // The kernel completes a handshake before the gateway's acceptor counts the connection:
    // under a loaded machine (the whole suite on 2 cores) counting the ten took over 1 s. An
    // eleventh that was kept because the ten were not all counted yet is let go and tried
    // again; with the cap broken every try is kept.
    let mut refused = false;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut eleventh = connect_from("127.0.0.5", gw.addr).await;
        if closed_within(&mut eleventh, Duration::from_secs(2)).await {
            refused = true;
            break;
        }
    }
    assert!(refused, "an eleventh connection was kept");
    for s in &mut first {
        assert!(
            !closed_within(s, Duration::from_millis(10)).await,
            "admitted connections stay open"
        );
    }
    // Two close: their places are free again.
    drop(first.pop());
    drop(others.pop());
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut s = connect_from("127.0.0.1", gw.addr).await;
        if s.write_all(chat_request(false).as_bytes()).await.is_err() {
            continue;
        }
        let mut b = [0u8; 1];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.peek(&mut b)).await
            && n > 0
        {
            assert_eq!(read_response(&mut s).await, 200);
            served = true;
            break;
        }
    }
    assert!(served, "a request got through once connections closed");
    drop(first);
    drop(others);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let total = metric(gw.addr, "llm_gateway_connections_rejected_total", &[]).await;
    let max = metric(
        gw.addr,
        "llm_gateway_connections_rejected_total",
        &[("reason", "max_connections")],
    )
    .await;
    let per_ip = metric(
        gw.addr,
        "llm_gateway_connections_rejected_total",
        &[("reason", "max_connections_per_ip")],
    )
    .await;
    assert!(
        per_ip >= 1.0 && max >= 1.0 && total == max + per_ip,
        "{max} {per_ip}"
    );
    // The closes (and the earlier scrapes' own connections) are seen when the gateway's
    // connection tasks next run: under the full suite's load that took longer than 200 ms.
    let mut open = 0.0;
    for _ in 0..100 {
        open = metric(gw.addr, "llm_gateway_connections_open", &[]).await;
        if open == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, 1.0, "only the scrape's own connection is open");
}

/// CPU seconds (user + system) of process `pid`, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = stat.rsplit_once(')').expect("comm").1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted from 1 with pid and comm first.
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_acceptor_backs_off_and_logs_once() {
    use std::io::BufRead;

    let sim = start_sim().await;
    let dir = std::env::temp_dir().join(format!("tollgate-emfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let cfg = dir.join("tollgate.toml");
    // A cap far above the 64 descriptors the process gets: accept itself fails (EMFILE).
    std::fs::write(
        &cfg,
        config(sim, "header_timeout_secs = 30\nmax_connections = 1000")
            + "\n[ledger]\nenabled = false\n",
    )
    .expect("config");
    let log = dir.join("stderr.log");
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("prlimit (util-linux) and the tollgate binary");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("listening line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("listening on ...")
        .parse()
        .expect("addr");
    // 120 connections: the gateway runs out of descriptors well before.
    let mut held = Vec::new();
    for _ in 0..120 {
        held.push(
            TcpStream::connect(addr)
                .await
                .expect("connect (the backlog takes it)"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = cpu_secs(child.id());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = cpu_secs(child.id()) - cpu_before;
    assert!(cpu < 0.5, "the acceptor spun: {cpu} CPU seconds in 3 s");
    // Descriptors come back as clients leave; real requests are served again.
    drop(held);
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if s.write_all(chat_request(false).as_bytes()).await.is_err() {
            continue;
        }
        let mut b = [0u8; 1];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.peek(&mut b)).await
            && n > 0
        {
            status = read_response(&mut s).await;
            break;
        }
    }
    assert_eq!(status, 200, "served once descriptors were free");
    let errors = metric(addr, "llm_gateway_accept_errors_total", &[]).await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    let lines = text.lines().filter(|l| l.contains("accept failed")).count();
    assert!(errors >= 10.0, "failed accepts counted: {errors}");
    assert_eq!(
        lines, 1,
        "one line per 10 s, not one per failure ({errors} failures):\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
