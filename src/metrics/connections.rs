//! The families of client connections of the main listener: open, accepted, refused by the
//! caps, closed by the header, body or idle timeout, and failed accepts.

use super::cells::{Counter, Gauge};
use super::render::{Kind, Value, Writer};

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `server.max_connections` open already.
    MaxConnections,
    /// `server.max_connections_per_ip` open already from the same address.
    MaxConnectionsPerIp,
}

/// Why the gateway closed a connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedOut {
    /// A request's headers did not arrive within `server.header_timeout_secs`.
    Header,
    /// No request for `server.idle_timeout_secs` on a kept-alive connection.
    Idle,
    /// A request's body did not arrive within `server.body_timeout_secs`.
    Body,
}

/// Connection counters; plain atomics, touched once per connection.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    /// Client connections open now.
    pub open: Gauge,
    /// `server.max_connections`.
    pub max: Gauge,
    /// Connections accepted (refused ones included).
    pub accepted: Counter,
    rejected: [Counter; 2],
    timed_out: [Counter; 3],
    /// `accept` failures (out of file descriptors and the like).
    pub accept_errors: Counter,
}

impl ConnectionMetrics {
    /// Counts a refused connection.
    pub fn rejected(&self, why: Rejected) {
        self.rejected[why as usize].add(1);
    }

    /// Counts a connection closed by a timeout.
    pub fn timed_out(&self, why: TimedOut) {
        self.timed_out[why as usize].add(1);
    }

    /// Refused connections so far, for `why`.
    pub fn rejected_count(&self, why: Rejected) -> u64 {
        self.rejected[why as usize].get()
    }
}

pub(super) fn render(w: &mut Writer, m: &ConnectionMetrics) {
    let open = "llm_gateway_connections_open";
    w.header(
        open,
        Kind::Gauge,
        "Client connections open on the main listener.",
    );
    w.sample(open, "", &[], None, Value::SignedInt(m.open.get()));
    let max = "llm_gateway_connections_max";
    w.header(
        max,
        Kind::Gauge,
        "Client connections the main listener keeps open at most (server.max_connections).",
    );
    w.sample(max, "", &[], None, Value::SignedInt(m.max.get()));
    let accepted = "llm_gateway_connections_accepted_total";
    w.header(
        accepted,
        Kind::Counter,
        "Client connections accepted on the main listener, refused ones included.",
    );
    w.sample(accepted, "", &[], None, Value::Int(m.accepted.get()));
    let rejected = "llm_gateway_connections_rejected_total";
    w.header(
        rejected,
        Kind::Counter,
        "Client connections closed at once because a connection cap was reached.",
    );
    for (reason, c) in ["max_connections", "max_connections_per_ip"]
        .iter()
        .zip(&m.rejected)
    {
        let labels = [("reason", (*reason).into())];
        w.sample(rejected, "", &labels, None, Value::Int(c.get()));
    }
    let timed_out = "llm_gateway_connections_timed_out_total";
    w.header(
        timed_out,
        Kind::Counter,
        "Client connections the gateway closed because a request's headers or body were too slow, or the connection sat idle.",
    );
    for (reason, c) in ["header_timeout", "idle_timeout", "body_timeout"]
        .iter()
        .zip(&m.timed_out)
    {
        let labels = [("reason", (*reason).into())];
        w.sample(timed_out, "", &labels, None, Value::Int(c.get()));
    }
    let errors = "llm_gateway_accept_errors_total";
    w.header(
        errors,
        Kind::Counter,
        "Failed accepts on the gateway's listeners (e.g. out of file descriptors).",
    );
    w.sample(errors, "", &[], None, Value::Int(m.accept_errors.get()));
}
