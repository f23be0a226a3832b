//! Route: the provider serving the requested model, and whether it serves this endpoint.

use super::error::{self, ProxyError};
use super::request::RequestFacts;
use crate::config::{Config, Route};
use crate::providers::Endpoint;

/// The route of `facts.model` on `endpoint`: exact name, longest prefix, catch-all `*`.
pub(super) fn route<'c>(
    config: &'c Config,
    endpoint: Endpoint,
    facts: &RequestFacts<'_>,
) -> Result<&'c Route, ProxyError> {
    let route = config
        .router
        .route(&facts.model)
        .ok_or_else(|| ProxyError::UnknownModel(error::echo(&facts.model)))?;
    let provider = &route.provider;
    if !provider.supports(endpoint) {
        return Err(ProxyError::EndpointNotServed {
            model: error::echo(&facts.model),
            provider: provider.name().to_string(),
            kind: provider.kind().as_str(),
            endpoint: endpoint.path(),
        });
    }
    Ok(route)
}
