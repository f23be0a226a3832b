//! OpenAI's Admin API: `GET /v1/organization/costs` (USD as JSON numbers, by line item and
//! project) and `GET /v1/organization/usage/{completions,embeddings}` (tokens by model,
//! project, API key, batch and service tier). Daily buckets; `Authorization: Bearer` with an
//! admin key.

use chrono::NaiveDate;
use serde_json::Value;

use super::money::usd_f64_to_nanos;
use super::source::{
    BilledLine, BillingSource, Dataset, Page, PageRequest, ParseError, day_of_unix, int, text,
    token_type,
};

/// `https://api.openai.com/v1`.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Most daily buckets a costs page may hold ("Limit can range between 1 and 180").
const COSTS_MAX_LIMIT: i64 = 180;
/// Most daily buckets a usage page may hold (`bucket_width=1d`: max 31).
const USAGE_MAX_LIMIT: i64 = 31;

/// An OpenAI organization's bill.
pub struct OpenAiBilling {
    /// The admin key.
    pub admin_key: String,
}

fn unix(d: NaiveDate) -> String {
    d.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp())
        .to_string()
}

fn common(from: NaiveDate, to: NaiveDate, max: i64) -> Vec<(String, String)> {
    let days = (to - from).num_days().clamp(1, max);
    vec![
        ("start_time".into(), unix(from)),
        ("end_time".into(), unix(to)),
        ("bucket_width".into(), "1d".into()),
        ("limit".into(), days.to_string()),
    ]
}

fn group_by(params: &mut Vec<(String, String)>, keys: &[&str]) {
    for k in keys {
        params.push(("group_by[]".into(), (*k).into()));
    }
}

/// `"gpt-4o-mini-2024-07-18, input_tokens"` to (model, item); a line item without a comma
/// is an item of no model.
fn split_line_item(li: &str) -> (String, String) {
    match li.rsplit_once(", ") {
        Some((m, i)) => (m.trim().to_string(), i.trim().to_string()),
        None => (String::new(), li.trim().to_string()),
    }
}

impl BillingSource for OpenAiBilling {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        vec![("authorization", format!("Bearer {}", self.admin_key))]
    }

    fn requests(&self, from: NaiveDate, to: NaiveDate) -> Vec<PageRequest> {
        let mut costs = common(from, to, COSTS_MAX_LIMIT);
        group_by(&mut costs, &["line_item", "project_id"]);
        let mut completions = common(from, to, USAGE_MAX_LIMIT);
        group_by(
            &mut completions,
            &["model", "project_id", "api_key_id", "batch", "service_tier"],
        );
        let mut embeddings = common(from, to, USAGE_MAX_LIMIT);
        group_by(&mut embeddings, &["model", "project_id", "api_key_id"]);
        vec![
            PageRequest {
                path: "/organization/costs",
                params: costs,
            },
            PageRequest {
                path: "/organization/usage/completions",
                params: completions,
            },
            PageRequest {
                path: "/organization/usage/embeddings",
                params: embeddings,
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
            let start = bucket.get("start_time").and_then(Value::as_i64);
            let Some(day) = start.and_then(day_of_unix) else {
                return Err(ParseError(format!(
                    "{}: a bucket without start_time",
                    req.path
                )));
            };
            let results = bucket.get("results").and_then(Value::as_array);
            for r in results.into_iter().flatten() {
                if req.path == "/organization/costs" {
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
    let amount = r
        .pointer("/amount/value")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let currency = r
        .pointer("/amount/currency")
        .and_then(Value::as_str)
        .unwrap_or("usd");
    if !currency.eq_ignore_ascii_case("usd") {
        return Err(ParseError(format!(
            "costs: currency {currency:?}: only USD is supported"
        )));
    }
    let cost_nanos =
        usd_f64_to_nanos(amount).map_err(|e| ParseError(format!("costs: amount: {e}")))?;
    let (model, item) = split_line_item(&text(r, "line_item"));
    let q = r.get("quantity").and_then(Value::as_f64).unwrap_or(0.0);
    let quantity = match r.get("quantity_unit").and_then(Value::as_str) {
        Some("tokens") => q.round() as i64,
        Some("1000_tokens") => (q * 1000.0).round() as i64,
        _ => 0,
    };
    Ok(BilledLine {
        day,
        dataset: Dataset::Cost,
        model,
        project: text(r, "project_id"),
        api_key: text(r, "api_key_id"),
        item,
        service_tier: String::new(),
        cost_nanos,
        quantity,
    })
}

fn usage_lines(day: NaiveDate, r: &Value, out: &mut Vec<BilledLine>) {
    let mut tier = text(r, "service_tier");
    if tier.is_empty() && r.get("batch").and_then(Value::as_bool) == Some(true) {
        tier = "batch".into();
    }
    let counts = [
        (token_type::INPUT, int(r, "input_tokens")),
        (token_type::OUTPUT, int(r, "output_tokens")),
        (token_type::CACHED_READ, int(r, "input_cached_tokens")),
        (token_type::CACHE_WRITE, int(r, "input_cache_write_tokens")),
        (token_type::REQUESTS, int(r, "num_model_requests")),
    ];
    for (item, n) in counts {
        if n == 0 {
            continue;
        }
        out.push(BilledLine {
            day,
            dataset: Dataset::Usage,
            model: text(r, "model"),
            project: text(r, "project_id"),
            api_key: text(r, "api_key_id"),
            item: item.into(),
            service_tier: tier.clone(),
            cost_nanos: 0,
            quantity: n,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> OpenAiBilling {
        OpenAiBilling {
            admin_key: "sk-admin-x".into(),
        }
    }

    #[test]
    fn requests_use_brackets_and_the_api_limits() {
        let from = NaiveDate::from_ymd_opt(2024, 11, 1).expect("date");
        let to = NaiveDate::from_ymd_opt(2024, 11, 4).expect("date");
        let reqs = src().requests(from, to);
        assert_eq!(reqs.len(), 3);
        let p = &reqs[0].params;
        assert!(p.contains(&("start_time".into(), "1730419200".into())));
        assert!(p.contains(&("limit".into(), "3".into())));
        assert!(p.contains(&("group_by[]".into(), "line_item".into())));
        let far = NaiveDate::from_ymd_opt(2025, 11, 1).expect("date");
        assert!(
            src().requests(from, far)[1]
                .params
                .contains(&("limit".into(), "31".into()))
        );
        assert!(
            src().requests(from, far)[0]
                .params
                .contains(&("limit".into(), "180".into()))
        );
    }

    #[test]
    fn the_documented_examples_read() {
        let costs = br#"{"object":"page","data":[{"object":"bucket","start_time":1730419200,
            "end_time":1730505600,"results":[{"object":"organization.costs.result",
            "amount":{"value":0.06,"currency":"usd"},"line_item":"gpt-4o-mini, input_tokens",
            "project_id":"proj_abc","quantity":10000,"quantity_unit":"tokens"}]}],
            "has_more":true,"next_page":"page_2"}"#;
        let r = &src().requests(
            NaiveDate::from_ymd_opt(2024, 11, 1).expect("d"),
            NaiveDate::from_ymd_opt(2024, 11, 2).expect("d"),
        );
        let page = src().parse_page(&r[0], costs).expect("costs");
        assert_eq!(page.next_page.as_deref(), Some("page_2"));
        let l = &page.lines[0];
        assert_eq!(l.cost_nanos, 60_000_000);
        assert_eq!(
            (l.model.as_str(), l.item.as_str()),
            ("gpt-4o-mini", "input_tokens")
        );
        assert_eq!(l.quantity, 10_000);
        assert_eq!(l.day.to_string(), "2024-11-01");
        let usage = br#"{"object":"page","data":[{"object":"bucket","start_time":1730419200,
            "end_time":1730505600,"results":[{"object":"organization.usage.completions.result",
            "input_tokens":5000,"input_cached_tokens":1800,"input_cache_write_tokens":200,
            "output_tokens":1000,"num_model_requests":5,"project_id":"proj_abc",
            "api_key_id":"key_abc","model":"gpt-4o-mini-2024-07-18","batch":false,
            "service_tier":"default"}]}],"has_more":false,"next_page":null}"#;
        let page = src().parse_page(&r[1], usage).expect("usage");
        assert!(page.next_page.is_none());
        let get = |t: &str| page.lines.iter().find(|l| l.item == t).map(|l| l.quantity);
        assert_eq!(get("input"), Some(5000));
        assert_eq!(get("cached_read"), Some(1800));
        assert_eq!(get("cache_write"), Some(200));
        assert_eq!(get("output"), Some(1000));
        assert_eq!(get("requests"), Some(5));
        assert!(src().parse_page(&r[0], b"{}").is_err());
    }
}
