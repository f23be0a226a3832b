//! The request path for proxied endpoints, in phases: authenticate, read the request, route,
//! (admit: rate limits, added by the limits module), forward, then observe the response body
//! through a tap and settle usage, cost and metrics exactly once.

pub mod error;
mod request;
pub mod settle;
pub mod sse;
pub mod tap;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;

use crate::config::{Config, KeyInfo};
use crate::ledger::{self, Ledger, UsageRow};
use crate::metrics::{Metrics, Observation};
use crate::providers::{ApiFormat, Endpoint};
pub use error::ProxyError;
use settle::{Ending, Facts, PendingRequest, status_label};
use tap::TapBody;

/// The body of every response the gateway sends.
pub type ResponseBody = Either<Full<Bytes>, TapBody>;

/// The upstream HTTP client: one pool for all providers, HTTP/1.1 and h2, TLS by rustls.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Everything the request path needs, shared by all connections.
pub struct Gateway {
    /// The validated config.
    pub config: Config,
    /// Metric families.
    pub metrics: Arc<Metrics>,
    /// The usage ledger (rows go to its writer; never waited on).
    pub ledger: Ledger,
    client: UpstreamClient,
    warned_unpriced: Mutex<HashSet<(String, String)>>,
}

/// Builds the upstream client. `TCP_NODELAY` is set: without it a keep-alive request can stall
/// ~40 ms on Nagle's algorithm meeting delayed ACKs.
pub fn upstream_client() -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(https)
}

impl Gateway {
    /// A gateway for `config`.
    pub fn new(config: Config) -> Arc<Gateway> {
        let metrics = Metrics::new(&config.metrics.options);
        Gateway::with_ledger(config, metrics, Ledger::disabled())
    }

    /// A gateway recording into `metrics` (created with [`Metrics::new`]) and `ledger`
    /// (opened with [`Ledger::open`] on the same metrics).
    pub fn with_ledger(config: Config, metrics: Arc<Metrics>, ledger: Ledger) -> Arc<Gateway> {
        Arc::new(Gateway {
            config,
            metrics,
            ledger,
            client: upstream_client(),
            warned_unpriced: Mutex::new(HashSet::new()),
        })
    }

    /// Logs once per (provider, model) that a model has no price.
    pub(crate) fn warn_unpriced(&self, provider: &str, model: &str) {
        let mut warned = self.warned_unpriced.lock();
        if warned.len() < 10_000 && warned.insert((provider.to_string(), model.to_string())) {
            tracing::warn!(
                provider,
                model,
                "no price known for this model: its cost is counted as 0 (add a [[prices]] entry)"
            );
        }
    }

    /// Counts a request the gateway refused before it reached a provider.
    fn record_rejection(
        &self,
        endpoint: Endpoint,
        key: Option<&KeyInfo>,
        err: &ProxyError,
        start: Instant,
        customer: Option<Box<str>>,
    ) {
        let (team, key_name) = key.map_or(("", ""), |k| (&*k.team, &*k.name));
        let duration = start.elapsed();
        self.ledger.record(UsageRow {
            key_name: key.map_or_else(|| "".into(), |k| k.name.clone()),
            team: key.map_or_else(|| "".into(), |k| k.team.clone()),
            customer,
            provider: "none".into(),
            requested_model: ledger::row::bounded(
                err.requested_model().unwrap_or_default(),
                ledger::row::MAX_MODEL_CHARS,
            ),
            model: "none".into(),
            endpoint: endpoint.path(),
            status_code: err.status(),
            error_type: Some(err.error_type()),
            duration,
            started_at: chrono::Utc::now() - duration,
            ..UsageRow::blank()
        });
        self.metrics.record(&Observation {
            provider: "none",
            model: "none",
            team,
            key: key_name,
            endpoint: endpoint.path(),
            status_code: status_label(err.status()),
            error_type: Some(err.error_type()),
            usage: Default::default(),
            cost_nanos: 0,
            priced: true,
            estimated: false,
            duration: start.elapsed(),
            upstream: None,
            time_to_first_token: None,
            overhead: Some(start.elapsed()),
        });
    }

    /// Handles one request to a proxied endpoint.
    pub async fn forward(
        self: Arc<Self>,
        endpoint: Endpoint,
        req: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let start = Instant::now();
        let format = endpoint.format();
        let customer = customer_header(req.headers());
        // Authenticate.
        let key = match self.config.keys.authenticate(presented_key(req.headers())) {
            Some(k) => k,
            None => {
                let err = if presented_key(req.headers()).is_none() && !self.config.keys.is_open() {
                    ProxyError::MissingKey
                } else {
                    ProxyError::InvalidKey
                };
                self.record_rejection(endpoint, None, &err, start, customer);
                return error_response(format, &err);
            }
        };
        match self
            .clone()
            .forward_as(endpoint, key.clone(), req, start, customer.clone())
            .await
        {
            Ok(resp) => resp,
            Err(err) => {
                self.record_rejection(endpoint, Some(&key), &err, start, customer);
                error_response(format, &err)
            }
        }
    }

    async fn forward_as(
        self: Arc<Self>,
        endpoint: Endpoint,
        key: Arc<KeyInfo>,
        req: Request<Incoming>,
        start: Instant,
        customer: Option<Box<str>>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let format = endpoint.format();
        let (parts, body) = req.into_parts();
        // Read the request.
        let limit = self.config.server.max_body_bytes;
        if content_length(&parts.headers).is_some_and(|n| n > limit as u64) {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        let body = match Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(ProxyError::BodyTooLarge { limit });
            }
            Err(e) => return Err(ProxyError::BodyRead(e.to_string())),
        };
        let facts = request::RequestFacts::parse(&body)?;
        // Route.
        let route = self
            .config
            .router
            .route(&facts.model)
            .ok_or_else(|| ProxyError::UnknownModel(facts.model.to_string()))?
            .clone();
        let provider = route.provider.clone();
        if !provider.supports(endpoint) {
            return Err(ProxyError::EndpointNotServed {
                model: facts.model.to_string(),
                provider: provider.name().to_string(),
                kind: provider.kind().as_str(),
                endpoint: endpoint.path(),
            });
        }
        let inject = facts.stream
            && endpoint.needs_include_usage()
            && provider.inject_stream_usage()
            && !facts.include_usage;
        let upstream_body =
            request::rewrite(&body, &facts, route.upstream_model.as_deref(), inject)?;
        let requested_model: Box<str> = facts.model.as_ref().into();
        let stream = facts.stream;
        let customer = customer.or_else(|| {
            facts
                .user
                .as_deref()
                .map(|u| ledger::row::bounded(u, ledger::row::MAX_CUSTOMER_CHARS))
        });

        // Forward.
        let mut headers = parts.headers;
        strip_client_headers(&mut headers);
        provider.authorize(&mut headers);
        let mut upstream_req = Request::new(Full::new(upstream_body));
        *upstream_req.method_mut() = Method::POST;
        *upstream_req.uri_mut() = provider.upstream_uri(endpoint).clone();
        *upstream_req.headers_mut() = headers;

        let in_flight = self.metrics.in_flight(provider.name());
        in_flight.add(1);
        let upstream_start = Instant::now();
        let mut pending = PendingRequest {
            gw: self.clone(),
            provider: provider.clone(),
            key,
            endpoint,
            requested_model,
            request_body: body,
            start,
            upstream_start: Some(upstream_start),
            first_byte: None,
            overhead: upstream_start - start,
            status: 0,
            stream,
            in_flight,
            settled: false,
            customer,
            upstream_request_id: None,
        };
        let sent = tokio::time::timeout(route.timeout, self.client.request(upstream_req)).await;
        let resp = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let err = ProxyError::UpstreamUnreachable {
                    provider: provider.name().to_string(),
                    reason: error_chain(&e),
                };
                tracing::warn!(provider = provider.name(), error = %err, "upstream request failed");
                pending.status = err.status();
                pending.settle(
                    Ending::GatewayError(err.status(), err.error_type()),
                    Facts::default(),
                );
                return Ok(error_response(format, &err));
            }
            Err(_) => {
                let err = ProxyError::UpstreamTimeout {
                    provider: provider.name().to_string(),
                    timeout: route.timeout,
                };
                tracing::warn!(provider = provider.name(), error = %err, "upstream request timed out");
                pending.status = err.status();
                pending.settle(
                    Ending::GatewayError(err.status(), err.error_type()),
                    Facts::default(),
                );
                return Ok(error_response(format, &err));
            }
        };

        // Observe: the body goes back through the tap, which settles at its end.
        let headers_at = Instant::now();
        let (mut parts, upstream_body) = resp.into_parts();
        pending.status = parts.status.as_u16();
        pending.upstream_request_id = upstream_request_id(&parts.headers);
        strip_hop_headers(&mut parts.headers);
        let is_sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let tap = if is_sse && parts.status.is_success() {
            parts.headers.remove(header::CONTENT_LENGTH);
            TapBody::sse(upstream_body, pending, inject)
        } else {
            TapBody::json(upstream_body, pending)
        };
        let mut tap = tap;
        tap.add_overhead(headers_at.elapsed());
        Ok(Response::from_parts(parts, Either::Right(tap)))
    }
}

/// The client's virtual key: `Authorization: Bearer <key>` or `x-api-key: <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(k) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(k.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The end user named by the client in `x-tollgate-customer`, for the ledger.
fn customer_header(headers: &HeaderMap) -> Option<Box<str>> {
    let v = headers.get("x-tollgate-customer")?.to_str().ok()?.trim();
    (!v.is_empty()).then(|| ledger::row::bounded(v, ledger::row::MAX_CUSTOMER_CHARS))
}

/// The provider's request id: `x-request-id` (OpenAI and most others) or `request-id`
/// (Anthropic).
fn upstream_request_id(headers: &HeaderMap) -> Option<Box<str>> {
    let v = headers
        .get("x-request-id")
        .or_else(|| headers.get("request-id"))?
        .to_str()
        .ok()?;
    Some(ledger::row::bounded(v, ledger::row::MAX_REQUEST_ID_CHARS))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Removes the client's credentials, hop-by-hop headers and the gateway's own headers before
/// forwarding; `accept-encoding` goes too, so the tap reads plain bytes.
fn strip_client_headers(headers: &mut HeaderMap) {
    for h in [
        header::HOST,
        header::AUTHORIZATION,
        header::CONTENT_LENGTH,
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::ACCEPT_ENCODING,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(h);
    }
    headers.remove("x-api-key");
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    let own: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-tollgate-"))
        .cloned()
        .collect();
    for k in own {
        headers.remove(k);
    }
}

fn strip_hop_headers(headers: &mut HeaderMap) {
    for h in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
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

/// An error answered by the gateway, in the client's format.
pub fn error_response(format: ApiFormat, err: &ProxyError) -> Response<ResponseBody> {
    let (kind, code) = err.client_type(format);
    json_error(format, err.status(), kind, code, &err.to_string())
}

/// A JSON error body in `format`'s shape.
pub fn json_error(
    format: ApiFormat,
    status: u16,
    kind: &str,
    code: Option<&str>,
    message: &str,
) -> Response<ResponseBody> {
    let body = format.error_body(kind, code, message);
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tg-123"),
        );
        assert_eq!(presented_key(&h), Some("tg-123"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("tg-456"));
        assert_eq!(presented_key(&h), Some("tg-456"));
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }

    #[test]
    fn client_credentials_and_own_headers_never_go_upstream() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tg-123"),
        );
        h.insert("x-api-key", HeaderValue::from_static("tg-456"));
        h.insert("x-tollgate-customer", HeaderValue::from_static("c1"));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        strip_client_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("anthropic-version"));
    }
}
