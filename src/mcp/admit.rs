//! Admit: the limits of one MCP message, with the gateway's limiter (memory or Redis), and
//! the JSON-RPC error a refusal is answered with.

use serde_json::{Value, json};

use super::config::McpServer;
use super::exchange::Outcome;
use super::jsonrpc::code;
use crate::config::KeyInfo;
use crate::limits::{Admission, Demand, OnBackendError, Rejection};
use crate::proxy::Gateway;

/// Why a message was not admitted.
pub(super) struct Refused {
    /// How the message ends.
    pub outcome: Outcome,
    /// The JSON-RPC error code.
    pub code: i64,
    /// Its message.
    pub message: String,
    /// Its data.
    pub data: Option<Value>,
}

/// The limits of a message: for a tool call the key's and team's (requests, parallel
/// requests, budgets: the tool's cost counts in them), the server's and the tool's; for other
/// requests the server's. In lock order: key, team, server, tool.
pub(super) async fn admit(
    gw: &Gateway,
    server: &McpServer,
    key: &KeyInfo,
    tool: Option<&str>,
    cost_nanos: u64,
) -> Result<Option<Admission>, Refused> {
    let mut rules = match tool {
        Some(_) => key.rules_for(""),
        None => Vec::new(),
    };
    rules.extend(server.rule.clone());
    if let Some(spec) = tool.and_then(|t| server.tools.get(t)) {
        rules.extend(spec.rule.clone());
    }
    if rules.is_empty() {
        return Ok(None);
    }
    let demand = Demand {
        tokens: 0,
        cost_nanos,
    };
    match gw
        .limiter
        .admit(rules, demand, &key.team, &key.name, &key.series)
        .await
    {
        Ok(Ok(a)) => Ok(Some(a)),
        Ok(Err(rej)) => Err(limited(&rej)),
        Err(e) => match gw.limiter.on_backend_error() {
            OnBackendError::Allow => {
                tracing::warn!(error = %e, "MCP: rate-limit backend failed; allowed (on_backend_error = allow)");
                Ok(None)
            }
            OnBackendError::Deny => Err(Refused {
                outcome: Outcome::Limited("limit_backend_down"),
                code: code::LIMITED,
                message: "the rate-limit backend is unavailable".into(),
                data: None,
            }),
        },
    }
}

fn limited(rej: &Rejection) -> Refused {
    let budget = rej.budget.is_some();
    Refused {
        outcome: Outcome::Limited(if budget {
            "budget_exceeded"
        } else {
            "rate_limited"
        }),
        code: code::LIMITED,
        message: rej.message(),
        data: Some(json!({
            "limit": rej.limit.as_str(),
            "scope": rej.scope.as_str(),
            "name": &*rej.name,
            "retry_after_secs": rej.retry_after.ceil().max(0.0),
        })),
    }
}
