//! Which handler answers which path.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::metrics::Format;
use crate::providers::{ApiFormat, Endpoint};
use crate::proxy::{Gateway, ResponseBody, auth, error_response, json_error};

/// The body of any response of a listener: the LLM API's, or the MCP gateway's.
pub type ServerBody = Either<ResponseBody, crate::mcp::McpBody>;

/// The routing table of one listener.
pub struct Routes {
    gateway: Arc<Gateway>,
    proxy: bool,
    metrics: bool,
}

impl Routes {
    /// Routes that serve the proxied API (`proxy`) and/or the metrics endpoints (`metrics`).
    pub fn new(gateway: Arc<Gateway>, proxy: bool, metrics: bool) -> Routes {
        Routes {
            gateway,
            proxy,
            metrics,
        }
    }

    /// The gateway these routes serve.
    pub(super) fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ServerBody> {
        if self.proxy && req.uri().path().starts_with("/mcp/") {
            let resp = crate::mcp::handle(self.gateway.clone(), req).await;
            return resp.map(Either::Right);
        }
        self.handle_api(req).await.map(Either::Left)
    }

    /// Everything but the MCP gateway.
    async fn handle_api(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let path = req.uri().path();
        if self.proxy
            && let Some((endpoint, _)) = Endpoint::from_path(path)
        {
            if req.method() != Method::POST {
                let format = endpoint.format();
                return json_error(
                    format,
                    405,
                    if format == ApiFormat::Bedrock {
                        "UnknownOperationException"
                    } else {
                        "invalid_request_error"
                    },
                    None,
                    &format!("{} only accepts POST", endpoint.path()),
                );
            }
            return self.gateway.clone().forward(endpoint, req).await;
        }
        match (req.method(), path) {
            (&Method::GET, "/metrics" | "/api/v1/metrics") if self.metrics => {
                self.metrics(&req).await
            }
            (&Method::GET, "/api/v1/billing") => {
                super::billing::billing(&self.gateway, req.headers(), req.uri().query()).await
            }
            (&Method::GET, "/api/v1/usage") => {
                super::usage::usage(&self.gateway.ledger, req.headers(), req.uri().query()).await
            }
            (&Method::GET, "/v1/models") if self.proxy => self.models(&req),
            (&Method::GET, "/health" | "/healthz" | "/ready") => {
                text(StatusCode::OK, "text/plain", "ok\n".into())
            }
            _ => {
                let format = client_format(&req);
                json_error(
                    format,
                    404,
                    match format {
                        ApiFormat::Anthropic => "not_found_error",
                        ApiFormat::OpenAi => "invalid_request_error",
                        ApiFormat::Gemini => "NOT_FOUND",
                        ApiFormat::Bedrock => "UnknownOperationException",
                    },
                    None,
                    &format!("unsupported path: {} {}", req.method(), path),
                )
            }
        }
    }

    async fn metrics(&self, req: &Request<Incoming>) -> Response<ResponseBody> {
        if let Some(token) = &self.gateway.config.metrics.bearer_token {
            let presented = auth::bearer_token(req.headers());
            if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
                let mut resp = text(
                    StatusCode::UNAUTHORIZED,
                    "text/plain",
                    "metrics require a bearer token\n".into(),
                );
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return resp;
            }
        }
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let format = Format::from_accept(accept);
        let window = match super::usage::metrics_window(req.uri().query()) {
            Ok(w) => w,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("{e}\n").into(),
                );
            }
        };
        // The ledger gauges: from the database, cached, so a scrape costs a query at most
        // every `[ledger] metrics_cache_secs`.
        let ledger = self.gateway.ledger.window_gauges(window).await;
        // The bill's gauges: from the stored bill, cached the same way (30 s).
        let billing = self
            .gateway
            .billing
            .gauges(window, Some(&self.gateway.config.prices))
            .await;
        let body = self
            .gateway
            .metrics
            .render_all(format, ledger.as_deref(), billing.as_deref());
        text(StatusCode::OK, format.content_type(), body.into())
    }

    /// `GET /v1/models`: the configured models, in the shape of whichever SDK asks.
    fn models(&self, req: &Request<Incoming>) -> Response<ResponseBody> {
        let format = client_format(req);
        // The same check, and so the same error, as the proxy routes.
        if let Err(err) = auth::authenticate(&self.gateway.config.keys, req.headers()) {
            return error_response(format, &err);
        }
        let names = self.gateway.config.router.model_names();
        let body = match format {
            ApiFormat::OpenAi | ApiFormat::Gemini | ApiFormat::Bedrock => serde_json::json!({
                "object": "list",
                "data": names.iter().map(|(m, p)| serde_json::json!({
                    "id": m, "object": "model", "created": 0, "owned_by": p
                })).collect::<Vec<_>>()
            }),
            ApiFormat::Anthropic => serde_json::json!({
                "data": names.iter().map(|(m, _)| serde_json::json!({
                    "type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"
                })).collect::<Vec<_>>(),
                "has_more": false,
                "first_id": names.first().map(|(m, _)| m),
                "last_id": names.last().map(|(m, _)| m),
            }),
        };
        text(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&body).unwrap_or_default().into(),
        )
    }
}

/// Anthropic clients send `anthropic-version` (and usually `x-api-key`); Google's paths
/// (Gemini's `/v1beta/...`, Vertex AI's `/v1/projects/...`, `/v1beta1/...`) get Google's
/// shape; everyone else OpenAI's.
fn client_format(req: &Request<Incoming>) -> ApiFormat {
    let path = req.uri().path();
    if req.headers().contains_key("anthropic-version") {
        ApiFormat::Anthropic
    } else if path.starts_with("/v1beta")
        || path.starts_with("/v1/projects/")
        || path.starts_with("/v1/publishers/")
    {
        ApiFormat::Gemini
    } else {
        ApiFormat::OpenAi
    }
}

fn text(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ResponseBody> {
    let mut resp = Response::new(Either::Left(Full::new(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
