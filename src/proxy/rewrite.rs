//! Rewrite: the request the provider gets. The client's bytes with the upstream model and
//! `stream_options.include_usage` spliced in where needed, the client's headers filtered by
//! the provider kind's allow-list, and the provider's own authentication added.

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::Full;

use super::context::RequestContext;
use super::error::{self, ProxyError};
use super::request::{self, RequestFacts};
use crate::config::Route;
use crate::providers;

/// The upstream request, and whether the gateway asked for stream usage the client did not
/// (the tap then removes it again).
pub(super) struct Rewritten {
    pub(super) request: Request<Full<Bytes>>,
    pub(super) inject_usage: bool,
}

/// Builds the upstream request for `route` from the client's `headers`, `query` and `body`:
/// the client's bytes spliced, or translated into the provider's format.
pub(super) fn rewrite(
    route: &Route,
    ctx: &RequestContext,
    facts: &RequestFacts<'_>,
    query: Option<&str>,
    mut headers: HeaderMap,
    body: &Bytes,
) -> Result<Rewritten, ProxyError> {
    let provider = &route.provider;
    if let Some(reason) = provider.unavailable() {
        return Err(ProxyError::UpstreamUnreachable {
            provider: provider.name().to_string(),
            reason,
        });
    }
    let endpoint = ctx.upstream_endpoint();
    let upstream_model = route.upstream_model.as_deref();
    let target = providers::Target {
        endpoint,
        model: upstream_model.unwrap_or(&facts.model),
        query: ctx.translation.and_then(|t| t.upstream_query()).or(query),
    };
    let uri = match provider.upstream_uri(&target) {
        Ok(uri) => uri.into_owned(),
        Err(reason) => {
            return Err(ProxyError::InvalidModel {
                model: error::echo(&facts.model),
                provider: provider.name().to_string(),
                reason,
            });
        }
    };
    // Azure deployments and Gemini carry the model in the path, not the body.
    let body_model = upstream_model.filter(|_| provider.model_in_body(endpoint));
    let (upstream_body, inject_usage) = match ctx.translation {
        Some(t) => (t.request(body, body_model)?, false),
        None => {
            let inject = facts.stream
                && endpoint.needs_include_usage()
                && provider.inject_stream_usage()
                && !facts.include_usage;
            (request::rewrite(body, facts, body_model, inject)?, inject)
        }
    };
    provider.header_policy().filter(&mut headers);
    let mut upstream = Request::new(upstream_body);
    *upstream.method_mut() = Method::POST;
    *upstream.uri_mut() = uri;
    *upstream.headers_mut() = headers;
    // Last: a signer signs the request as it is sent.
    provider.authorize(&mut upstream);
    Ok(Rewritten {
        request: upstream.map(Full::new),
        inject_usage,
    })
}
