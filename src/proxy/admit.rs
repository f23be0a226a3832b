//! Admit: the key's, team's and team-model's rate limits and budgets, before anything is sent.

use std::time::{Duration, Instant};

use super::Gateway;
use super::context::{Refusal, RequestContext};
use super::error::ProxyError;
use super::request::RequestFacts;
use crate::limits::{self, Admission, Demand};
use crate::metering::Usage;

impl Gateway {
    /// Checks the request against its key's, team's and team-model's limits and reserves its
    /// estimated tokens and cost. `Ok(None)`: nothing to limit, or the backend failed and
    /// `on_backend_error = "allow"`.
    pub(super) async fn admit(
        &self,
        ctx: &RequestContext,
        price_model: &str,
        facts: &RequestFacts<'_>,
        body_len: usize,
    ) -> Result<Option<Admission>, Refusal> {
        let (Some(key), endpoint) = (ctx.key.as_deref(), ctx.endpoint) else {
            return Ok(None);
        };
        let rules = key.rules_for(&facts.model);
        if rules.is_empty() || !endpoint.is_metered() {
            return Ok(None);
        }
        // Bytes / 4 approximates input tokens without tokenizing on the request path.
        let input = (body_len as u64).div_ceil(4);
        // The client's `max_tokens` may be u64::MAX: no request uses more than the
        // plausibility bound, which is also what it can be charged at settle.
        let max = self.config.metering.max_tokens_per_request;
        let input = input.min(max);
        let output = match endpoint {
            ep if ep.is_embedding() => 0,
            _ => facts
                .max_tokens
                .unwrap_or(self.config.limits.default_max_tokens)
                .min(max),
        };
        let cost_nanos = self.config.prices.lookup(price_model).map_or(0, |p| {
            p.cost_nanos(&Usage {
                input,
                output,
                ..Usage::default()
            })
        });
        let demand = Demand {
            // `max_tokens` may be u64::MAX (the benchmark sends it).
            tokens: input.saturating_add(output),
            cost_nanos,
        };
        match self
            .limiter
            .admit(rules, demand, &key.team, &key.name, &key.series)
            .await
        {
            Ok(Ok(admission)) => Ok(Some(admission)),
            Ok(Err(rejection)) => Err(Refusal::Limited(rejection)),
            Err(e) => {
                let mut last = self.last_limit_error_log.lock();
                if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    *last = Some(Instant::now());
                    tracing::error!(error = %e, on_backend_error = ?self.limiter.on_backend_error(), "rate-limit backend failed (this message repeats at most every 10 s)");
                }
                match self.limiter.on_backend_error() {
                    limits::OnBackendError::Allow => Ok(None),
                    limits::OnBackendError::Deny => Err(ProxyError::LimitBackendDown.into()),
                }
            }
        }
    }
}
