//! Route: the provider serving the requested model, and whether it serves this endpoint.

use super::error::{self, ProxyError};
use super::request::RequestFacts;
use crate::config::{Config, Route};
use crate::providers::Endpoint;
use crate::translate::Translation;

/// The route of `facts.model` on `endpoint`: exact name, longest prefix, catch-all `*`; with
/// the translation needed when the provider serves the request only in another format.
pub(super) fn route<'c>(
    config: &'c Config,
    endpoint: Endpoint,
    facts: &RequestFacts<'_>,
) -> Result<(&'c Route, Option<Translation>), ProxyError> {
    let route = config
        .router
        .route(&facts.model)
        .ok_or_else(|| ProxyError::UnknownModel(error::echo(&facts.model)))?;
    let provider = &route.provider;
    if provider.supports(endpoint) {
        return Ok((route, None));
    }
    match Translation::between(
        endpoint,
        provider.kind(),
        |e| provider.supports(e),
        facts.stream,
        route.upstream_model.as_deref().unwrap_or(&facts.model),
    ) {
        Some(t) => Ok((route, Some(t))),
        None => Err(ProxyError::EndpointNotServed {
            model: error::echo(&facts.model),
            provider: provider.name().to_string(),
            kind: provider.kind().as_str(),
            endpoint: endpoint.path(),
        }),
    }
}
