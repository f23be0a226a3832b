//! One fetch of a source: every request of [`BillingSource::requests`], each followed through
//! its pages (`page` = the previous `next_page`), with retries: a 429 waits its `Retry-After`
//! (else a backoff), a 5xx, a timeout or a refused connection backs off 1 s, 2 s, 4 s; a 401,
//! 403 or other 4xx is not retried (a wrong key does not heal by asking again).

use std::time::Duration;

use bytes::Bytes;
use chrono::NaiveDate;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::source::{BilledLine, BillingSource, PageRequest};
use crate::metrics::Metrics;
use crate::proxy::upstream::UpstreamClient;

/// Attempts per page, the first included.
const MAX_ATTEMPTS: u32 = 4;
/// The first backoff; doubled at each retry.
const BACKOFF: Duration = Duration::from_secs(1);
/// Longest `Retry-After` honoured: a provider asking for more is failed and retried at the
/// next interval instead of holding the poller.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Pages followed per request before the fetch is called a loop (31 days at one bucket a
/// page is 31; a cursor that never ends must not hold the poller forever).
const MAX_PAGES: usize = 1000;
/// Largest response body read (a month of one organization's usage is well under 1 MiB).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why a fetch failed; [`FetchError::reason`] is the metric's bounded label.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// 401 or 403: the admin key is wrong or lacks the scope.
    #[error("{path}: {status}: {message} (is admin_key an admin key?)")]
    Unauthorized {
        /// Path.
        path: &'static str,
        /// Status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// 429 at every attempt.
    #[error("{path}: rate limited (429) after {MAX_ATTEMPTS} attempts")]
    RateLimited {
        /// Path.
        path: &'static str,
    },
    /// 5xx at every attempt.
    #[error("{path}: {status}: {message}")]
    Server {
        /// Path.
        path: &'static str,
        /// Status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// Another 4xx.
    #[error("{path}: {status}: {message}")]
    Client {
        /// Path.
        path: &'static str,
        /// Status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// No answer in time.
    #[error("{path}: no answer within {timeout:?}")]
    Timeout {
        /// Path.
        path: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// The connection failed.
    #[error("{path}: {message}")]
    Connect {
        /// Path.
        path: &'static str,
        /// Why.
        message: String,
    },
    /// The body did not read as the documented shape.
    #[error("{0}")]
    Parse(String),
    /// The ledger database did not take the lines.
    #[error("storing the bill: {0}")]
    Store(String),
}

impl FetchError {
    /// The `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Unauthorized { .. } => "unauthorized",
            FetchError::RateLimited { .. } => "rate_limited",
            FetchError::Server { .. } => "server_error",
            FetchError::Client { .. } => "client_error",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Connect { .. } => "connect",
            FetchError::Parse(_) => "parse",
            FetchError::Store(_) => "store",
        }
    }
}

/// Every reason, for exposing each source's error counters from the start at 0.
pub const REASONS: &[&str] = &[
    "unauthorized",
    "rate_limited",
    "server_error",
    "client_error",
    "timeout",
    "connect",
    "parse",
    "store",
];

/// What one fetch needs beside the source.
pub struct Fetcher<'a> {
    /// HTTP client.
    pub client: &'a UpstreamClient,
    /// Base URL without a trailing slash.
    pub base_url: &'a str,
    /// Source name (the metric label).
    pub name: &'a str,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// Where failed attempts are counted.
    pub metrics: &'a Metrics,
}

/// `k=v&...`, percent-encoded; brackets in keys kept as `%5B%5D` (what the SDKs send).
fn encode_query(params: &[(String, String)]) -> String {
    let enc = |s: &str| {
        let mut o = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                o.push(b as char);
            } else {
                o.push_str(&format!("%{b:02X}"));
            }
        }
        o
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Seconds of a `Retry-After` header (the delta form; an HTTP date is not sent by these APIs).
fn retry_after(h: &http::HeaderMap) -> Option<Duration> {
    h.get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl Fetcher<'_> {
    /// Fetches the days `[from, to)`: every line of every page of every request.
    pub async fn fetch(
        &self,
        source: &dyn BillingSource,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<BilledLine>, FetchError> {
        let mut lines = Vec::new();
        for req in source.requests(from, to) {
            let mut cursor: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let body = self.get(source, &req, cursor.as_deref()).await?;
                let page = source
                    .parse_page(&req, &body)
                    .map_err(|e| FetchError::Parse(e.0))?;
                lines.extend(page.lines);
                match page.next_page {
                    Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                    Some(_) => {
                        return Err(FetchError::Parse(format!(
                            "{}: next_page repeats the cursor just sent",
                            req.path
                        )));
                    }
                    None => break,
                }
            }
        }
        Ok(lines)
    }

    /// One page, retried as the module says; each failed attempt counted.
    async fn get(
        &self,
        source: &dyn BillingSource,
        req: &PageRequest,
        page: Option<&str>,
    ) -> Result<Bytes, FetchError> {
        let mut params = req.params.clone();
        if let Some(p) = page {
            params.push(("page".into(), p.into()));
        }
        let uri = format!("{}{}?{}", self.base_url, req.path, encode_query(&params));
        let mut backoff = BACKOFF;
        let mut attempt = 1;
        loop {
            let result = self.attempt(source, req.path, &uri).await;
            let (err, wait) = match result {
                Ok(body) => return Ok(body),
                Err((e, wait)) => (e, wait),
            };
            self.metrics.billing.fetch_error(self.name, err.reason());
            let retry = matches!(
                err,
                FetchError::RateLimited { .. }
                    | FetchError::Server { .. }
                    | FetchError::Timeout { .. }
                    | FetchError::Connect { .. }
            );
            let wait = wait.unwrap_or(backoff);
            if !retry || attempt >= MAX_ATTEMPTS || wait > MAX_RETRY_AFTER {
                return Err(err);
            }
            tracing::debug!(source = self.name, error = %err, ?wait, "billing: retrying");
            tokio::time::sleep(wait).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    /// One HTTP GET; an error comes with the wait the server asked for.
    async fn attempt(
        &self,
        source: &dyn BillingSource,
        path: &'static str,
        uri: &str,
    ) -> Result<Bytes, (FetchError, Option<Duration>)> {
        let mut b = Request::get(uri).header(header::ACCEPT, "application/json");
        for (k, v) in source.headers() {
            b = b.header(k, v);
        }
        let request = b.body(Full::new(Bytes::new())).map_err(|e| {
            (
                FetchError::Connect {
                    path,
                    message: format!("bad request: {e}"),
                },
                None,
            )
        })?;
        let timeout = self.timeout;
        let timed_out = || (FetchError::Timeout { path, timeout }, None);
        let exchange = async {
            let resp = self.client.request(request).await.map_err(|e| {
                // hyper-util says only "client error (Connect)"; the cause is in its sources.
                let mut message = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    message.push_str(": ");
                    message.push_str(&c.to_string());
                    cause = c.source();
                }
                (FetchError::Connect { path, message }, None)
            })?;
            let status = resp.status();
            let wait = retry_after(resp.headers());
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| {
                    (
                        FetchError::Connect {
                            path,
                            message: format!("reading the body: {e}"),
                        },
                        None,
                    )
                })?
                .to_bytes();
            Ok::<_, (FetchError, Option<Duration>)>((status, wait, body))
        };
        let (status, wait, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| timed_out())??;
        if status.is_success() {
            return Ok(body);
        }
        let message = source
            .error_message(&body)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into());
        let code = status.as_u16();
        let err = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FetchError::Unauthorized {
                path,
                status: code,
                message,
            },
            StatusCode::TOO_MANY_REQUESTS => FetchError::RateLimited { path },
            s if s.is_server_error() => FetchError::Server {
                path,
                status: code,
                message,
            },
            _ => FetchError::Client {
                path,
                status: code,
                message,
            },
        };
        Err((err, wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded_in_brackets_style() {
        let q = encode_query(&[
            ("group_by[]".into(), "model".into()),
            ("starting_at".into(), "2025-08-01T00:00:00Z".into()),
        ]);
        assert_eq!(
            q,
            "group_by%5B%5D=model&starting_at=2025-08-01T00%3A00%3A00Z"
        );
        let mut h = http::HeaderMap::new();
        h.insert(header::RETRY_AFTER, http::HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }
}
