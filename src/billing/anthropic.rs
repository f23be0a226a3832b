//! Anthropic's Admin API: `GET /v1/organizations/usage_report/messages` (tokens by model, API
//! key, workspace, service tier, context window) and `GET /v1/organizations/cost_report`
//! (cents as decimal strings, by workspace and description). `x-api-key` with an admin key
//! and `anthropic-version`. Unknown fields (the newer analytics endpoints add `requests`,
//! `list_amount`, `inference_geo`, `speed`, ...) are ignored.

use chrono::NaiveDate;
use serde_json::Value;

use super::money::{cents_str_to_nanos, usd_f64_to_nanos};
use super::source::{
    BilledLine, BillingSource, Dataset, Page, PageRequest, ParseError, day_of_rfc3339, int, text,
    token_type,
};

/// `https://api.anthropic.com/v1`.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";

/// The `anthropic-version` the Admin API documents.
const VERSION: &str = "2023-06-01";
/// Most daily buckets a page may hold (both endpoints: `1d` maximum 31).
const MAX_LIMIT: i64 = 31;

/// An Anthropic organization's bill.
pub struct AnthropicBilling {
    /// The admin key.
    pub admin_key: String,
}

fn params(from: NaiveDate, to: NaiveDate, group_by: &[&str]) -> Vec<(String, String)> {
    let days = (to - from).num_days().clamp(1, MAX_LIMIT);
    let mut p = vec![
        ("starting_at".into(), format!("{from}T00:00:00Z")),
        ("ending_at".into(), format!("{to}T00:00:00Z")),
        ("bucket_width".into(), "1d".into()),
        ("limit".into(), days.to_string()),
    ];
    for g in group_by {
        p.push(("group_by[]".into(), (*g).into()));
    }
    p
}

impl BillingSource for AnthropicBilling {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("x-api-key", self.admin_key.clone()),
            ("anthropic-version", VERSION.into()),
        ]
    }

    fn requests(&self, from: NaiveDate, to: NaiveDate) -> Vec<PageRequest> {
        vec![
            PageRequest {
                path: "/organizations/cost_report",
                params: params(from, to, &["workspace_id", "description"]),
            },
            PageRequest {
                path: "/organizations/usage_report/messages",
                params: params(
                    from,
                    to,
                    &[
                        "model",
                        "api_key_id",
                        "workspace_id",
                        "service_tier",
                        "context_window",
                    ],
                ),
            },
        ]
    }

    fn parse_page(&self, req: &PageRequest, body: &[u8]) -> Result<Page, ParseError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ParseError(format!("{}: not JSON: {e}", req.path)))?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| ParseError(format!("{}: no `data` array", req.path)))?;
        let mut page = Page {
            next_page: if v.get("has_more").and_then(Value::as_bool) == Some(true) {
                v.get("next_page")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            } else {
                None
            },
            ..Page::default()
        };
        for bucket in data {
            let start = bucket.get("starting_at").and_then(Value::as_str);
            let Some(day) = start.and_then(day_of_rfc3339) else {
                return Err(ParseError(format!(
                    "{}: a bucket without starting_at",
                    req.path
                )));
            };
            let results = bucket.get("results").and_then(Value::as_array);
            for r in results.into_iter().flatten() {
                if req.path == "/organizations/cost_report" {
                    page.lines.push(cost_line(day, r)?);
                } else {
                    usage_lines(day, r, &mut page.lines);
                }
            }
        }
        Ok(page)
    }
}

fn cost_line(day: NaiveDate, r: &Value) -> Result<BilledLine, ParseError> {
    let currency = r.get("currency").and_then(Value::as_str).unwrap_or("USD");
    if !currency.eq_ignore_ascii_case("usd") {
        return Err(ParseError(format!(
            "cost_report: currency {currency:?}: only USD is supported"
        )));
    }
    // Documented as a decimal string of cents; a JSON number is read through its text.
    let cost_nanos = match r.get("amount") {
        Some(Value::String(s)) => cents_str_to_nanos(s),
        Some(Value::Number(n)) => n
            .as_f64()
            .map_or(Ok(0), |c| usd_f64_to_nanos(c).map(|x| x / 100)),
        _ => Ok(0),
    }
    .map_err(|e| ParseError(format!("cost_report: amount: {e}")))?;
    let cost_type = text(r, "cost_type");
    let item = match text(r, "token_type") {
        t if !t.is_empty() => t,
        _ if !cost_type.is_empty() => cost_type,
        _ => text(r, "description"),
    };
    Ok(BilledLine {
        day,
        dataset: Dataset::Cost,
        model: text(r, "model"),
        project: text(r, "workspace_id"),
        api_key: String::new(),
        item,
        service_tier: text(r, "service_tier"),
        cost_nanos,
        quantity: 0,
    })
}

fn usage_lines(day: NaiveDate, r: &Value, out: &mut Vec<BilledLine>) {
    let uncached = int(r, "uncached_input_tokens");
    let read = int(r, "cache_read_input_tokens");
    let cc = r.get("cache_creation").cloned().unwrap_or(Value::Null);
    let write = int(&cc, "ephemeral_5m_input_tokens") + int(&cc, "ephemeral_1h_input_tokens");
    let web = r
        .get("server_tool_use")
        .map_or(0, |s| int(s, "web_search_requests"));
    let counts = [
        (token_type::INPUT, uncached + read + write),
        (token_type::OUTPUT, int(r, "output_tokens")),
        (token_type::CACHED_READ, read),
        (token_type::CACHE_WRITE, write),
        (token_type::REQUESTS, int(r, "requests")),
        (token_type::WEB_SEARCH, web),
    ];
    for (item, n) in counts {
        if n == 0 {
            continue;
        }
        out.push(BilledLine {
            day,
            dataset: Dataset::Usage,
            model: text(r, "model"),
            project: text(r, "workspace_id"),
            api_key: text(r, "api_key_id"),
            item: item.into(),
            service_tier: text(r, "service_tier"),
            cost_nanos: 0,
            quantity: n,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples_read() {
        let s = AnthropicBilling {
            admin_key: "k".into(),
        };
        let d = |x| NaiveDate::from_ymd_opt(2025, 8, x).expect("date");
        let reqs = s.requests(d(1), d(4));
        assert!(
            reqs[0]
                .params
                .contains(&("starting_at".into(), "2025-08-01T00:00:00Z".into()))
        );
        assert!(
            reqs[1]
                .params
                .contains(&("group_by[]".into(), "context_window".into()))
        );
        let cost =
            br#"{"data":[{"starting_at":"2025-08-01T00:00:00Z","ending_at":"2025-08-02T00:00:00Z",
            "results":[{"currency":"USD","amount":"123.78912","workspace_id":"wrkspc_01",
            "description":"Claude Sonnet 4 Usage - Input Tokens","cost_type":"tokens",
            "context_window":"0-200k","model":"claude-sonnet-4-20250514","service_tier":"standard",
            "token_type":"uncached_input_tokens"}]}],"has_more":true,"next_page":"page_x"}"#;
        let page = s.parse_page(&reqs[0], cost).expect("cost");
        assert_eq!(page.next_page.as_deref(), Some("page_x"));
        assert_eq!(page.lines[0].cost_nanos, 1_237_891_200);
        assert_eq!(page.lines[0].item, "uncached_input_tokens");
        let usage = br#"{"data":[{"starting_at":"2025-08-01T00:00:00Z","ending_at":"2025-08-02T00:00:00Z",
            "results":[{"uncached_input_tokens":1500,"cache_creation":{"ephemeral_1h_input_tokens":1000,
            "ephemeral_5m_input_tokens":500},"cache_read_input_tokens":200,"output_tokens":500,
            "server_tool_use":{"web_search_requests":10},"api_key_id":"apikey_01",
            "workspace_id":"wrkspc_01","model":"claude-sonnet-4-20250514","service_tier":"standard",
            "context_window":"0-200k"}]}],"has_more":false,"next_page":null}"#;
        let page = s.parse_page(&reqs[1], usage).expect("usage");
        let get = |t: &str| page.lines.iter().find(|l| l.item == t).map(|l| l.quantity);
        assert_eq!(get("input"), Some(3200));
        assert_eq!(get("cache_write"), Some(1500));
        assert_eq!(get("cached_read"), Some(200));
        assert_eq!(get("output"), Some(500));
        assert_eq!(get("web_search_requests"), Some(10));
        assert!(page.next_page.is_none());
    }
}
