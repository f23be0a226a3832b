//! `GET /api/v1/billing`: the provider's bill beside the ledger, behind the ledger's admin
//! token.

use chrono::NaiveDate;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

/// The query-string reader of the admin endpoints (shared with `/api/v1/usage`).
pub use super::usage::query_params;
use super::usage::{body, json};
use crate::billing::reconcile::parse_group_by;
use crate::ledger::LedgerError;
use crate::ledger::report::parse_time;
use crate::proxy::{Gateway, ResponseBody};

/// Reads `from` and `to` (dates, or RFC 3339 times taken at their UTC day) into days
/// `[from, to)`.
pub fn parse_days(from: Option<&str>, to: Option<&str>) -> Result<(NaiveDate, NaiveDate), String> {
    let from = parse_time("from", from.ok_or("missing parameter `from`")?)?.date_naive();
    let to = parse_time("to", to.ok_or("missing parameter `to`")?)?.date_naive();
    if from >= to {
        return Err(format!(
            "`from` ({from}) must be before `to` ({to}): the window is the UTC days [from, to)"
        ));
    }
    Ok((from, to))
}

/// `GET /api/v1/billing?from=..&to=..&group_by=provider,model,day&format=json|csv`.
pub async fn billing(
    gateway: &Gateway,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response<ResponseBody> {
    let ledger = &gateway.ledger;
    let Some(token) = ledger.config().and_then(|c| c.admin_token.as_deref()) else {
        return json(
            StatusCode::NOT_FOUND,
            "the billing API is off: enable the ledger and set [ledger] admin_token",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|p| super::routes::constant_time_eq(p.as_bytes(), token.as_bytes())) {
        let mut resp = json(
            StatusCode::UNAUTHORIZED,
            "the billing API needs `Authorization: Bearer <[ledger] admin_token>`",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    if !gateway.billing.is_enabled() {
        return json(
            StatusCode::NOT_FOUND,
            "no [[billing]] sources are configured",
        );
    }
    let params = query_params(query);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    for (k, _) in &params {
        if !["from", "to", "group_by", "format"].contains(&k.as_str()) {
            return json(
                StatusCode::BAD_REQUEST,
                &format!("unknown parameter {k:?}; known: from, to, group_by, format"),
            );
        }
    }
    let csv = match param("format").unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return json(
                StatusCode::BAD_REQUEST,
                &format!("`format` must be json or csv, not {other:?}"),
            );
        }
    };
    let (from, to) = match parse_days(param("from"), param("to")) {
        Ok(d) => d,
        Err(e) => return json(StatusCode::BAD_REQUEST, &e),
    };
    let group_by = match parse_group_by(param("group_by").unwrap_or("")) {
        Ok(g) => g,
        Err(e) => return json(StatusCode::BAD_REQUEST, &e),
    };
    let result = gateway
        .billing
        .reconcile(from, to, group_by, Some(&gateway.config.prices))
        .await;
    match result {
        Ok(r) if csv => body(StatusCode::OK, "text/csv; charset=utf-8", r.to_csv().into()),
        Ok(r) => body(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&r.to_json()).unwrap_or_default().into(),
        ),
        Err(e @ LedgerError::Disabled) => json(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "billing API: query failed");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the ledger database cannot answer: {e}"),
            )
        }
    }
}
