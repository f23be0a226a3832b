//! Send: the upstream request, within the route's timeout. A failure is a refusal the
//! provider caused: settled with the provider and the time spent waiting for it.

use std::sync::Arc;

use http::Response;
use hyper::body::Incoming;

use super::Gateway;
use super::context::{Refusal, RequestContext};
use super::error::ProxyError;
use super::rewrite::Rewritten;
use super::upstream::{self, Lease};
use crate::config::{Route, StreamPolicy};
use crate::providers::Provider;

/// What the provider answered, with what observing its body needs.
pub(super) struct Sent {
    pub(super) response: Response<Incoming>,
    /// The pooled upstream connection, given back when the body has been read.
    pub(super) lease: Option<Lease>,
    pub(super) provider: Arc<dyn Provider>,
    pub(super) inject_usage: bool,
    pub(super) policy: StreamPolicy,
}

impl Gateway {
    /// Sends `upstream` to `route`'s provider and waits for its response head.
    pub(super) async fn send(
        &self,
        ctx: &mut RequestContext,
        route: &Route,
        upstream: Rewritten,
    ) -> Result<Sent, Refusal> {
        let provider = &route.provider;
        ctx.sending(provider.name());
        let sent = tokio::time::timeout(
            route.timeout,
            upstream::send(&self.client, upstream.request),
        );
        let err = match sent.await {
            Ok(Ok((response, lease))) => {
                return Ok(Sent {
                    response,
                    lease,
                    provider: provider.clone(),
                    inject_usage: upstream.inject_usage,
                    policy: route.stream,
                });
            }
            Ok(Err(e)) => ProxyError::UpstreamUnreachable {
                provider: provider.name().to_string(),
                reason: error_chain(&e),
            },
            Err(_) => ProxyError::UpstreamTimeout {
                provider: provider.name().to_string(),
                timeout: route.timeout,
            },
        };
        if let Some(left_out) = self.upstream_failure_log.allow(provider.name()) {
            tracing::warn!(provider = provider.name(), error = %err, left_out, "upstream request failed (logged at most every 10 s per provider; `left_out`: failures since the last line)");
        }
        Err(err.into())
    }
}

/// Every cause of an upstream error, without the request (which may hold secrets).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
