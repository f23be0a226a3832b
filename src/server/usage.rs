//! The ledger's HTTP side: `GET /api/v1/usage` and the time window of the ledger gauges on
//! the metrics endpoints.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use crate::ledger::report::parse_time;
use crate::ledger::window::Window;
use crate::ledger::{Ledger, LedgerError, ReportQuery};
use crate::proxy::ResponseBody;

/// The parameters of a query string, percent-decoded (`+` is a space, as forms send it).
pub fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The window a metrics scrape asks for: `from` and `to` together, or neither (the configured
/// default window).
pub fn metrics_window(query: Option<&str>) -> Result<Option<Window>, String> {
    let params = query_params(query);
    match (param(&params, "from"), param(&params, "to")) {
        (None, None) => Ok(None),
        (Some(f), Some(t)) => {
            let (from, to) = (parse_time("from", f)?, parse_time("to", t)?);
            if from >= to {
                return Err("`from` must be before `to`: the window is [from, to)".into());
            }
            Ok(Some((from, to)))
        }
        _ => Err("give both `from` and `to`, or neither".into()),
    }
}

/// `GET /api/v1/usage?from=..&to=..&group_by=..&format=json|csv`, behind the admin token.
pub async fn usage(
    ledger: &Ledger,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response<ResponseBody> {
    let Some(token) = ledger.config().and_then(|c| c.admin_token.as_deref()) else {
        return json(
            StatusCode::NOT_FOUND,
            "the usage API is off: enable the ledger and set [ledger] admin_token",
        );
    };
    let presented = crate::proxy::auth::bearer_token(headers);
    if !presented.is_some_and(|p| super::routes::constant_time_eq(p.as_bytes(), token.as_bytes())) {
        let mut resp = json(
            StatusCode::UNAUTHORIZED,
            "the usage API needs `Authorization: Bearer <[ledger] admin_token>`",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    let params = query_params(query);
    for (k, _) in &params {
        if !["from", "to", "group_by", "format"].contains(&k.as_str()) {
            return json(
                StatusCode::BAD_REQUEST,
                &format!("unknown parameter {k:?}; known: from, to, group_by, format"),
            );
        }
    }
    let csv = match param(&params, "format").unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return json(
                StatusCode::BAD_REQUEST,
                &format!("`format` must be json or csv, not {other:?}"),
            );
        }
    };
    let q = match ReportQuery::parse(
        param(&params, "from"),
        param(&params, "to"),
        param(&params, "group_by"),
    ) {
        Ok(q) => q,
        Err(e) => return json(StatusCode::BAD_REQUEST, &e),
    };
    match ledger.report(&q).await {
        Ok(report) if csv => body(
            StatusCode::OK,
            "text/csv; charset=utf-8",
            report.to_csv().into(),
        ),
        Ok(report) => body(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&report.to_json())
                .unwrap_or_default()
                .into(),
        ),
        Err(e @ LedgerError::Disabled) => json(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "usage API: ledger query failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the ledger database cannot answer: {e}"),
            )
        }
    }
}

/// An error answer of the admin APIs (usage, billing): `{"error": {message, code}}`.
pub(super) fn json(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let v = serde_json::json!({"error": {"message": message, "code": status.as_u16()}});
    body(
        status,
        "application/json",
        serde_json::to_vec(&v).unwrap_or_default().into(),
    )
}

/// A response of the admin APIs with its content type.
pub(super) fn body(
    status: StatusCode,
    content_type: &'static str,
    b: Bytes,
) -> Response<ResponseBody> {
    let mut resp = Response::new(Either::Left(Full::new(b)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        let p = query_params(Some(
            "from=2026-11-01T00%3A00%3A00%2B01%3A00&group_by=team,model&x",
        ));
        assert_eq!(param(&p, "from"), Some("2026-11-01T00:00:00+01:00"));
        assert_eq!(param(&p, "group_by"), Some("team,model"));
        assert_eq!(param(&p, "x"), Some(""));
        assert_eq!(decode("a+b%zz%4"), "a b%zz%4");
    }

    #[test]
    fn metrics_windows_need_both_ends() {
        assert_eq!(metrics_window(None), Ok(None));
        assert!(metrics_window(Some("from=2026-11-01")).is_err());
        assert!(metrics_window(Some("from=2026-11-02&to=2026-11-01")).is_err());
        let w = metrics_window(Some("from=2026-11-01&to=2026-12-01")).expect("ok");
        assert!(w.is_some());
    }
}
