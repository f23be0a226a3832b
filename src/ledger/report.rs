//! Usage reports: sums of requests, tokens and cost per group over a half-open UTC window
//! `[from, to)`. The same report serves `GET /api/v1/usage` (JSON or CSV) and `tollgate
//! usage` (a table or CSV).

use std::fmt::Write;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// A column a report can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKey {
    /// Team of the key.
    Team,
    /// Virtual key name.
    Key,
    /// End user.
    Customer,
    /// Provider name.
    Provider,
    /// Model the response named.
    Model,
    /// Model the client asked for.
    RequestedModel,
    /// Endpoint path.
    Endpoint,
    /// Status code.
    StatusCode,
    /// Error class.
    ErrorType,
    /// Stream or not.
    Stream,
    /// Usage estimated or reported.
    Estimated,
    /// Where the token counts come from: reported, partial, estimated, implausible.
    UsageSource,
    /// `priced` or `unpriced` (empty for rows written before prices were recorded).
    CostSource,
    /// The price a row was costed at (`model` or `model@YYYY-MM-DD`).
    PriceId,
    /// `standard`, `priority`, `flex` or `batch`.
    ServiceTier,
    /// UTC month, `2026-11`.
    Month,
    /// UTC day, `2026-11-23`.
    Day,
    /// UTC hour, `2026-11-23T14:00Z`.
    Hour,
}

/// Every group key with its name, in the order the errors list them.
pub const GROUP_KEYS: &[(&str, GroupKey)] = &[
    ("team", GroupKey::Team),
    ("key", GroupKey::Key),
    ("customer", GroupKey::Customer),
    ("provider", GroupKey::Provider),
    ("model", GroupKey::Model),
    ("requested_model", GroupKey::RequestedModel),
    ("endpoint", GroupKey::Endpoint),
    ("status_code", GroupKey::StatusCode),
    ("error_type", GroupKey::ErrorType),
    ("stream", GroupKey::Stream),
    ("estimated", GroupKey::Estimated),
    ("usage_source", GroupKey::UsageSource),
    ("cost_source", GroupKey::CostSource),
    ("price_id", GroupKey::PriceId),
    ("service_tier", GroupKey::ServiceTier),
    ("month", GroupKey::Month),
    ("day", GroupKey::Day),
    ("hour", GroupKey::Hour),
];

impl GroupKey {
    /// The name used in `group_by` and in the output.
    pub fn name(self) -> &'static str {
        GROUP_KEYS
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("?", |(n, _)| n)
    }

    /// The SQL expression of this key, the same on both backends except for time buckets.
    pub fn sql(self, postgres: bool) -> &'static str {
        match (self, postgres) {
            (GroupKey::Team, _) => "team",
            (GroupKey::Key, _) => "key_name",
            (GroupKey::Customer, _) => "COALESCE(customer, '')",
            (GroupKey::Provider, _) => "provider",
            (GroupKey::Model, _) => "model",
            (GroupKey::RequestedModel, _) => "requested_model",
            (GroupKey::Endpoint, _) => "endpoint",
            (GroupKey::StatusCode, _) => "CAST(status_code AS TEXT)",
            (GroupKey::ErrorType, _) => "COALESCE(error_type, '')",
            (GroupKey::Stream, _) => "CASE WHEN stream THEN 'true' ELSE 'false' END",
            (GroupKey::Estimated, _) => "CASE WHEN estimated THEN 'true' ELSE 'false' END",
            // Rows from before migration 6 have no usage_source.
            (GroupKey::UsageSource, _) => {
                "COALESCE(usage_source, CASE WHEN estimated THEN 'estimated' ELSE 'reported' END)"
            }
            (GroupKey::CostSource, _) => "COALESCE(cost_source, '')",
            (GroupKey::PriceId, _) => "COALESCE(price_id, '')",
            (GroupKey::ServiceTier, _) => "COALESCE(service_tier, '')",
            (GroupKey::Month, false) => "strftime('%Y-%m', started_at / 1000000, 'unixepoch')",
            (GroupKey::Day, false) => "strftime('%Y-%m-%d', started_at / 1000000, 'unixepoch')",
            (GroupKey::Hour, false) => {
                "strftime('%Y-%m-%dT%H:00Z', started_at / 1000000, 'unixepoch')"
            }
            (GroupKey::Month, true) => "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM')",
            (GroupKey::Day, true) => "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            (GroupKey::Hour, true) => {
                "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24\":00Z\"')"
            }
        }
    }
}

/// What to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    /// Inclusive start, UTC.
    pub from: DateTime<Utc>,
    /// Exclusive end, UTC.
    pub to: DateTime<Utc>,
    /// Group columns, in output order; empty for one line of totals.
    pub group_by: Vec<GroupKey>,
}

/// Reads a time: RFC 3339 (`2026-11-01T00:00:00Z`, any offset, converted to UTC) or a date
/// (`2026-11-01`, midnight UTC).
pub fn parse_time(name: &str, s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    let hint = if s.contains(' ') {
        " (a `+` in a URL must be written %2B)"
    } else {
        ""
    };
    Err(format!(
        "`{name}` must be an RFC 3339 time like 2026-11-01T00:00:00Z or a date like 2026-11-01, not {s:?}{hint}"
    ))
}

/// The calendar month (UTC) that holds `now`, as `[from, to)` dates: what `tollgate usage`
/// reports when `--from` and `--to` are left out.
pub fn month_of(now: DateTime<Utc>) -> (String, String) {
    use chrono::Datelike;
    let (y, m) = (now.year(), now.month());
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (format!("{y:04}-{m:02}-01"), format!("{ny:04}-{nm:02}-01"))
}

/// Reads `team,model,...`.
pub fn parse_group_by(s: &str) -> Result<Vec<GroupKey>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((_, key)) = GROUP_KEYS.iter().find(|(n, _)| *n == part) else {
            return Err(format!(
                "unknown group_by column {part:?}; known: {}",
                GROUP_KEYS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if out.contains(key) {
            return Err(format!("group_by lists {part:?} twice"));
        }
        out.push(*key);
    }
    Ok(out)
}

impl ReportQuery {
    /// Builds a query from its three text parameters; the error says what is wrong.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        group_by: Option<&str>,
    ) -> Result<ReportQuery, String> {
        let from = parse_time("from", from.ok_or("missing parameter `from`")?)?;
        let to = parse_time("to", to.ok_or("missing parameter `to`")?)?;
        if from >= to {
            return Err(format!(
                "`from` ({}) must be before `to` ({}): the window is [from, to)",
                rfc3339(from),
                rfc3339(to)
            ));
        }
        let group_by = parse_group_by(group_by.unwrap_or(""))?;
        Ok(ReportQuery { from, to, group_by })
    }
}

/// Sums over one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Finished requests.
    pub requests: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Input read from the prompt cache.
    pub cached_read_tokens: i64,
    /// Input written to the prompt cache.
    pub cache_write_tokens: i64,
    /// Output spent on reasoning.
    pub reasoning_tokens: i64,
    /// Cost in nano-USD.
    pub cost_nanos: i64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        // Saturating: rows hold counts a provider reported (bounded, yet summed over months).
        self.requests = self.requests.saturating_add(o.requests);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.cached_read_tokens = self.cached_read_tokens.saturating_add(o.cached_read_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(o.cache_write_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(o.cost_nanos);
    }

    fn values(&self) -> [i64; 6] {
        [
            self.requests,
            self.input_tokens,
            self.output_tokens,
            self.cached_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
        ]
    }
}

/// The sum columns, in output order (cost follows).
pub const SUM_COLUMNS: [&str; 6] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
];

/// One group of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    /// Values of the group columns, in query order.
    pub groups: Vec<String>,
    /// Its sums.
    pub totals: Totals,
}

/// A report: the query and one row per group, sorted by the group values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What was asked.
    pub query: ReportQuery,
    /// The groups.
    pub rows: Vec<ReportRow>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// USD with nine decimals, exact (no float on the way).
pub fn usd(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    format!("{sign}{}.{:09}", n / 1_000_000_000, n % 1_000_000_000)
}

impl Report {
    /// Sums over every row.
    pub fn grand_total(&self) -> Totals {
        let mut t = Totals::default();
        for r in &self.rows {
            t.add(&r.totals);
        }
        t
    }

    /// `{"from","to","group_by","rows":[{<group>:..., "requests":..., "cost_usd":...}],"total"}`.
    pub fn to_json(&self) -> serde_json::Value {
        let sums = |t: &Totals, obj: &mut serde_json::Map<String, serde_json::Value>| {
            for (name, v) in SUM_COLUMNS.iter().zip(t.values()) {
                obj.insert((*name).into(), v.into());
            }
            obj.insert("cost_nanos".into(), t.cost_nanos.into());
            obj.insert("cost_usd".into(), (t.cost_nanos as f64 / 1e9).into());
        };
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut obj = serde_json::Map::new();
                for (k, v) in self.query.group_by.iter().zip(&r.groups) {
                    obj.insert(k.name().into(), v.clone().into());
                }
                sums(&r.totals, &mut obj);
                obj.into()
            })
            .collect();
        let mut total = serde_json::Map::new();
        sums(&self.grand_total(), &mut total);
        serde_json::json!({
            "from": rfc3339(self.query.from),
            "to": rfc3339(self.query.to),
            "group_by": self.query.group_by.iter().map(|k| k.name()).collect::<Vec<_>>(),
            "rows": rows,
            "total": total,
        })
    }

    fn header(&self) -> Vec<String> {
        self.query
            .group_by
            .iter()
            .map(|k| k.name().to_string())
            .chain(SUM_COLUMNS.iter().map(|s| s.to_string()))
            .chain(["cost_usd".to_string()])
            .collect()
    }

    fn cells(&self, r: &ReportRow) -> Vec<String> {
        r.groups
            .iter()
            .cloned()
            .chain(r.totals.values().iter().map(|v| v.to_string()))
            .chain([usd(r.totals.cost_nanos)])
            .collect()
    }

    /// CSV with a header line (RFC 4180 quoting); cost in USD with nine decimals.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, cells: &[String]| {
            let quoted: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
            out.push_str(&quoted.join(","));
            out.push_str("\r\n");
        };
        line(&mut out, &self.header());
        for r in &self.rows {
            line(&mut out, &self.cells(r));
        }
        out
    }

    /// An aligned table for the terminal, with a total line.
    pub fn to_table(&self) -> String {
        let mut lines = vec![self.header()];
        lines.extend(
            self.rows
                .iter()
                .map(|r| self.cells(r).iter().map(|c| terminal_cell(c)).collect()),
        );
        let total = ReportRow {
            groups: (0..self.query.group_by.len())
                .map(|i| {
                    if i == 0 {
                        "TOTAL".into()
                    } else {
                        String::new()
                    }
                })
                .collect(),
            totals: self.grand_total(),
        };
        let show_total = !self.query.group_by.is_empty();
        if show_total {
            lines.push(self.cells(&total));
        }
        let cols = lines[0].len();
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let groups = self.query.group_by.len();
        let mut out = format!(
            "usage from {} to {} (UTC, [from, to))\n",
            rfc3339(self.query.from),
            rfc3339(self.query.to)
        );
        for (i, l) in lines.iter().enumerate() {
            if i == 1 || (show_total && i == lines.len() - 1) {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(out, "{}", rule.join("  "));
            }
            let cells: Vec<String> = l
                .iter()
                .enumerate()
                .map(|(c, v)| {
                    if c < groups {
                        format!("{v:<w$}", w = widths[c])
                    } else {
                        format!("{v:>w$}", w = widths[c])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        out
    }
}

/// One CSV field. Key, team, customer and model names come from clients (a `user` field, a
/// header): one starting with `=`, `+`, `-`, `@`, a tab or a CR would run as a formula in a
/// spreadsheet, so it gets a leading `'` and quotes, as OWASP's "CSV Injection" page
/// recommends. Fields with a separator, a quote or a line break are quoted (RFC 4180).
fn csv_cell(s: &str) -> String {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula {
        format!("\"'{}\"", s.replace('"', "\"\""))
    } else if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A stored value made safe for a terminal: control characters (escape sequences, line
/// breaks, backspaces) and the bidirectional overrides that reorder what is shown are written
/// as Rust escapes (`\u{1b}`, `\n`), so a name can neither move the cursor nor hide text.
fn terminal_cell(s: &str) -> String {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(unsafe_char) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_dates_in_utc() {
        let t = parse_time("from", "2026-11-01T01:00:00+01:00").expect("rfc3339");
        assert_eq!(rfc3339(t), "2026-11-01T00:00:00Z");
        let d = parse_time("from", "2026-11-01").expect("date");
        assert_eq!(t, d);
        let e = parse_time("to", "2026-11-01T00:00:00 01:00").expect_err("space");
        assert!(e.contains("%2B"), "{e}");
        assert!(parse_time("to", "yesterday").is_err());
    }

    #[test]
    fn the_default_window_is_the_current_month() {
        let at = |s: &str| parse_time("t", s).expect("time");
        let month = |a, b| (String::from(a), String::from(b));
        assert_eq!(
            month_of(at("2026-12-02T19:30:00Z")),
            month("2026-12-01", "2027-01-01")
        );
        assert_eq!(
            month_of(at("2026-02-28T23:59:59Z")),
            month("2026-02-01", "2026-03-01")
        );
        assert_eq!(
            month_of(at("2026-01-01T00:00:00Z")),
            month("2026-01-01", "2026-02-01")
        );
    }

    #[test]
    fn queries_say_what_is_wrong() {
        let q = ReportQuery::parse(Some("2026-11-01"), Some("2026-12-01"), Some("team, model"))
            .expect("valid");
        assert_eq!(q.group_by, vec![GroupKey::Team, GroupKey::Model]);
        let err = |f, t, g| ReportQuery::parse(f, t, g).expect_err("invalid");
        assert!(err(None, Some("2026-12-01"), None).contains("`from`"));
        assert!(err(Some("2026-12-01"), Some("2026-11-01"), None).contains("before"));
        assert!(err(Some("2026-11-01"), Some("2026-11-01"), None).contains("before"));
        assert!(
            err(Some("2026-11-01"), Some("2026-12-01"), Some("colour")).contains("known: team")
        );
        assert!(err(Some("2026-11-01"), Some("2026-12-01"), Some("team,team")).contains("twice"));
    }

    #[test]
    fn renders_json_csv_and_a_table() {
        let report = Report {
            query: ReportQuery::parse(Some("2026-11-01"), Some("2026-12-01"), Some("team"))
                .expect("q"),
            rows: vec![
                ReportRow {
                    groups: vec!["a,b".into()],
                    totals: Totals {
                        requests: 2,
                        input_tokens: 10,
                        cost_nanos: 1_500_000_001,
                        ..Totals::default()
                    },
                },
                ReportRow {
                    groups: vec!["c".into()],
                    totals: Totals {
                        requests: 1,
                        cost_nanos: 5,
                        ..Totals::default()
                    },
                },
            ],
        };
        let j = report.to_json();
        assert_eq!(j["rows"][0]["team"], "a,b");
        assert_eq!(j["rows"][0]["cost_nanos"], 1_500_000_001i64);
        assert_eq!(j["total"]["requests"], 3);
        assert_eq!(j["from"], "2026-11-01T00:00:00Z");
        let csv = report.to_csv();
        assert!(csv.starts_with("team,requests,input_tokens,"), "{csv}");
        assert!(
            csv.contains("\"a,b\",2,10,0,0,0,0,1.500000001\r\n"),
            "{csv}"
        );
        let table = report.to_table();
        assert!(table.contains("TOTAL"), "{table}");
        assert!(table.contains("1.500000006"), "{table}");
    }

    fn report_of(groups: &[&str]) -> Report {
        Report {
            query: ReportQuery::parse(Some("2026-11-01"), Some("2026-12-01"), Some("customer"))
                .expect("q"),
            rows: groups
                .iter()
                .map(|g| ReportRow {
                    groups: vec![g.to_string()],
                    totals: Totals {
                        requests: 1,
                        ..Totals::default()
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn csv_neutralises_formulas() {
        let csv = report_of(&[
            "=HYPERLINK(\"http://x\",\"y\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tcmd",
            "\rcmd",
            "plain",
            "a=b",
        ])
        .to_csv();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(
            lines[1..9],
            [
                "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",1,0,0,0,0,0,0.000000000",
                "\"'+1\",1,0,0,0,0,0,0.000000000",
                "\"'-2+3\",1,0,0,0,0,0,0.000000000",
                "\"'@SUM(A1)\",1,0,0,0,0,0,0.000000000",
                "\"'\tcmd\",1,0,0,0,0,0,0.000000000",
                "\"'\rcmd\",1,0,0,0,0,0,0.000000000",
                "plain,1,0,0,0,0,0,0.000000000",
                "a=b,1,0,0,0,0,0,0.000000000",
            ],
            "{csv}"
        );
    }

    #[test]
    fn the_table_escapes_control_characters() {
        let table = report_of(&[
            "\u{1b}[2J\u{1b}[31mevil",
            "two\nlines",
            "rtl\u{202e}txt",
            "café",
        ])
        .to_table();
        assert!(
            !table.contains('\u{1b}') && !table.contains('\u{202e}'),
            "{table:?}"
        );
        assert!(table.contains("\\u{1b}[2J\\u{1b}[31mevil"), "{table}");
        assert!(table.contains("two\\nlines"), "{table}");
        assert!(table.contains("rtl\\u{202e}txt"), "{table}");
        assert!(table.contains("café"), "{table}");
        // One line per row: header, rule, four rows, rule, total, and the title.
        assert_eq!(table.lines().count(), 9, "{table}");
    }
}
