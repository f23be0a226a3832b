//! One HTTP exchange with an MCP server and the JSON-RPC messages it carried: answers matched
//! to requests by id as they pass, and the one settlement (metrics, ledger rows, limiter) when
//! it ends, however it ends: answered, refused, cut, timed out, or the client gone (`Drop`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::config::McpServer;
use super::jsonrpc::{Answer, Id, code_error_type};
use crate::config::KeyInfo;
use crate::ledger::UsageRow;
use crate::ledger::row::{MAX_MODEL_CHARS, bounded};
use crate::limits::Admission;
use crate::metrics::McpObservation;
use crate::proxy::Gateway;

/// How one message ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a result.
    Ok,
    /// Notifications and client responses the server took (2xx).
    Accepted,
    /// A tool result with `isError: true`.
    ToolError,
    /// A JSON-RPC error from the server.
    RpcError(i64),
    /// The server answered with an HTTP error and no JSON-RPC answer to this request.
    HttpError(u16),
    /// The gateway gave up waiting for the server.
    Timeout,
    /// The server could not be reached, cut the stream, or ended it without an answer.
    UpstreamError(&'static str),
    /// The client went away before the answer.
    ClientGone,
    /// The caller may not call this tool.
    Forbidden,
    /// A limit or budget refused it (or the limiter could not be asked, with `deny`).
    Limited(&'static str),
    /// Not JSON-RPC, too large, or a header disagreeing with the body.
    Invalid(&'static str),
}

impl Outcome {
    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Accepted => "accepted",
            Outcome::ToolError => "tool_error",
            Outcome::RpcError(_) => "rpc_error",
            Outcome::HttpError(_) => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::UpstreamError(_) => "upstream_error",
            Outcome::ClientGone => "client_gone",
            Outcome::Forbidden => "forbidden",
            Outcome::Limited(_) => "limited",
            Outcome::Invalid(_) => "invalid",
        }
    }

    /// The bounded `error_type`, `None` for success.
    pub fn error_type(self) -> Option<&'static str> {
        Some(match self {
            Outcome::Ok | Outcome::Accepted => return None,
            Outcome::ToolError => "tool_error",
            Outcome::RpcError(c) => code_error_type(c),
            Outcome::HttpError(s) if s < 500 => "http_4xx",
            Outcome::HttpError(_) => "http_5xx",
            Outcome::Timeout => "timeout",
            Outcome::UpstreamError(why) => why,
            Outcome::ClientGone => "client_gone",
            Outcome::Forbidden => "forbidden_tool",
            Outcome::Limited(why) => why,
            Outcome::Invalid(why) => why,
        })
    }

    /// The server ran the tool: its cost is charged.
    fn charged(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::ToolError)
    }
}

impl From<Answer> for Outcome {
    fn from(a: Answer) -> Outcome {
        match a {
            Answer::Result => Outcome::Ok,
            Answer::ToolError => Outcome::ToolError,
            Answer::Error(c) => Outcome::RpcError(c),
        }
    }
}

/// What the message was, for settling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request, answered by the response with its id.
    Request,
    /// A notification or a client's response: answered by the HTTP status.
    OneWay,
    /// A GET stream or a DELETE: answered by the HTTP status; the client closing a GET
    /// stream is its normal end.
    Http,
}

/// One message of the exchange.
pub struct Pending {
    /// Request ids; `None` otherwise.
    pub id: Option<Id>,
    /// The bounded method label.
    pub method: &'static str,
    /// `tools/call`: the tool.
    pub tool: Option<Box<str>>,
    /// What it is.
    pub kind: Kind,
    /// The tool's cost if it runs, nano-USD.
    pub cost_nanos: u64,
    /// Its reservations in the limiter, settled with the exchange.
    pub admission: Option<Admission>,
    /// How it ended, once known, and when.
    pub outcome: Option<(Outcome, Instant)>,
}

impl Pending {
    /// A message of `kind`, not yet ended.
    pub fn new(kind: Kind, method: &'static str) -> Pending {
        Pending {
            id: None,
            method,
            tool: None,
            kind,
            cost_nanos: 0,
            admission: None,
            outcome: None,
        }
    }
}

/// How the HTTP exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The response body was read to its end.
    Complete,
    /// The upstream stream broke.
    Cut,
    /// The gateway stopped waiting for the upstream.
    Timeout,
    /// The upstream could not be reached.
    Unreachable,
    /// The client went away.
    ClientGone,
}

/// One HTTP exchange, settled exactly once.
pub struct Exchange {
    gw: Arc<Gateway>,
    /// The server.
    pub server: Arc<McpServer>,
    key: Option<Arc<KeyInfo>>,
    started: Instant,
    started_at: DateTime<Utc>,
    /// Its messages.
    pub pending: Vec<Pending>,
    /// The status the client got.
    pub status: u16,
    /// Response body bytes so far.
    pub bytes: u64,
    answers: Vec<(Option<Id>, Answer)>,
    settled: bool,
}

impl Exchange {
    /// An exchange that began at `started`.
    pub fn new(
        gw: &Arc<Gateway>,
        server: &Arc<McpServer>,
        key: Option<Arc<KeyInfo>>,
        started: Instant,
    ) -> Exchange {
        Exchange {
            gw: gw.clone(),
            server: server.clone(),
            key,
            started,
            started_at: Utc::now() - started.elapsed(),
            pending: Vec::new(),
            status: 0,
            bytes: 0,
            answers: Vec::new(),
            settled: false,
        }
    }

    /// Ends every message not ended yet with `outcome`.
    pub fn end_all(&mut self, outcome: Outcome) {
        let now = Instant::now();
        for p in &mut self.pending {
            if p.outcome.is_none() {
                p.outcome = Some((outcome, now));
            }
        }
    }

    /// Reads the answers in one JSON text (a body, or one SSE event's data).
    pub fn on_data(&mut self, data: &[u8]) {
        self.answers.clear();
        super::jsonrpc::answers(data, &mut self.answers);
        if self.answers.is_empty() {
            return;
        }
        let now = Instant::now();
        for (id, answer) in self.answers.drain(..) {
            let target = match &id {
                Some(id) => self
                    .pending
                    .iter_mut()
                    .find(|p| p.outcome.is_none() && p.id.as_ref() == Some(id)),
                // An id-less error ("Session not found", "Missing session ID") answers the
                // body's one request, if it has one.
                None => {
                    let mut open = self
                        .pending
                        .iter_mut()
                        .filter(|p| p.kind == Kind::Request && p.outcome.is_none());
                    match (open.next(), open.next()) {
                        (Some(p), None) => Some(p),
                        _ => None,
                    }
                }
            };
            if let Some(p) = target {
                p.outcome = Some((answer.into(), now));
            }
        }
    }

    /// Ends the exchange: every message still open ends by `end` and the HTTP status, then
    /// metrics, ledger rows and limiter reservations are settled.
    pub fn finish(&mut self, end: End) {
        if self.settled {
            return;
        }
        self.settled = true;
        let now = Instant::now();
        let status = self.status;
        let ok = (200..300).contains(&status);
        for p in &mut self.pending {
            if p.outcome.is_some() {
                continue;
            }
            let o = match (end, p.kind) {
                (End::Timeout, _) => Outcome::Timeout,
                (End::Unreachable, _) => Outcome::UpstreamError("upstream_unreachable"),
                (_, Kind::OneWay | Kind::Http) if !ok && status != 0 => Outcome::HttpError(status),
                (End::ClientGone, Kind::Http) => Outcome::Ok,
                (End::ClientGone, _) => Outcome::ClientGone,
                (End::Cut, _) => Outcome::UpstreamError("upstream_cut"),
                (End::Complete, Kind::OneWay) => Outcome::Accepted,
                (End::Complete, Kind::Http) => Outcome::Ok,
                (End::Complete, Kind::Request) if !ok => Outcome::HttpError(status),
                (End::Complete, Kind::Request) => Outcome::UpstreamError("no_response"),
            };
            p.outcome = Some((o, now));
        }
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            self.settle(p);
        }
    }

    fn settle(&self, p: Pending) {
        let (outcome, at) = p.outcome.unwrap_or((Outcome::ClientGone, Instant::now()));
        let duration = at.saturating_duration_since(self.started);
        let cost = if outcome.charged() { p.cost_nanos } else { 0 };
        if let Some(a) = p.admission {
            self.gw.limiter.settle(a, 0, cost);
        }
        let (team, key) = self
            .key
            .as_deref()
            .map_or(("", ""), |k| (&*k.team, &*k.name));
        let tool = p.tool.as_deref().unwrap_or("");
        let error_type = outcome.error_type();
        self.gw.metrics.mcp.record(&McpObservation {
            server: &self.server.name,
            method: p.method,
            tool,
            team,
            key,
            outcome: outcome.as_str(),
            error_type,
            duration,
            response_bytes: self.bytes,
            cost_nanos: cost,
        });
        if p.tool.is_some() && self.gw.ledger.is_enabled() {
            self.gw
                .ledger
                .record(self.row(tool, outcome, duration, cost));
        }
    }

    fn row(&self, tool: &str, outcome: Outcome, duration: Duration, cost: u64) -> UsageRow {
        let tool = bounded(tool, MAX_MODEL_CHARS);
        let key = self.key.as_deref();
        UsageRow {
            started_at: self.started_at,
            duration,
            key_name: key.map_or_else(|| "".into(), |k| k.name.clone()),
            team: key.map_or_else(|| "".into(), |k| k.team.clone()),
            provider: self.server.name.clone(),
            requested_model: tool.clone(),
            model: tool,
            endpoint: "mcp",
            stream: false,
            status_code: if self.status == 0 { 502 } else { self.status },
            error_type: outcome.error_type(),
            cost_nanos: i64::try_from(cost).unwrap_or(i64::MAX),
            mcp_outcome: Some(outcome.as_str()),
            response_bytes: Some(i64::try_from(self.bytes).unwrap_or(i64::MAX)),
            ..UsageRow::blank()
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.finish(End::ClientGone);
    }
}
