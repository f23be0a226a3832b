//! Who may call which tool: the refusal of a forbidden `tools/call`, the `tools/list` answers
//! cut down to the caller's tools, and the 2026-07-28 request-metadata headers checked against
//! the body (a policy read from the body must not be bypassed by a header the server trusts).

use base64::Engine;
use http::HeaderMap;
use serde_json::Value;

use super::config::Allowed;
use super::jsonrpc::Id;

/// The first protocol version whose `Mcp-Method` / `Mcp-Name` headers servers validate
/// against the body (2026-07-28 streamable-http.mdx, "Server Validation").
pub const HEADER_VALIDATED_SINCE: &str = "2026-07-28";

/// A header that disagrees with the body (answered 400, JSON-RPC -32020, as the server would).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMismatch(pub &'static str);

/// `MCP-Protocol-Version`, if the client sent one.
pub fn protocol_version(headers: &HeaderMap) -> Option<&str> {
    headers.get("mcp-protocol-version")?.to_str().ok()
}

/// True when the version requires header-body validation (versions are dates: `YYYY-MM-DD`
/// compares as text).
pub fn header_validated(version: Option<&str>) -> bool {
    version.is_some_and(|v| v.len() == 10 && v >= HEADER_VALIDATED_SINCE)
}

/// A header value as the spec encodes it: plain, or `=?base64?<b64 of UTF-8>?=`.
fn decoded(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?;
    match s
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(s.to_string()),
    }
}

/// For a single request of a header-validated version: `Mcp-Method` must equal the body's
/// method and, for `tools/call`, `Mcp-Name` the tool. Older versions' headers are not read
/// (the spec: do not trust headers a server does not validate); the body decides.
pub fn check_headers(
    headers: &HeaderMap,
    method: &str,
    tool: Option<&str>,
) -> Result<(), HeaderMismatch> {
    if !header_validated(protocol_version(headers)) {
        return Ok(());
    }
    let m = headers
        .get("mcp-method")
        .and_then(|v| decoded(v.as_bytes()));
    if m.as_deref() != Some(method) {
        return Err(HeaderMismatch(
            "mcp-method header does not match the request body's method",
        ));
    }
    if let Some(tool) = tool {
        let n = headers.get("mcp-name").and_then(|v| decoded(v.as_bytes()));
        if n.as_deref() != Some(tool) {
            return Err(HeaderMismatch(
                "mcp-name header does not match the request body's 'name' parameter",
            ));
        }
    }
    Ok(())
}

/// Cuts the `tools` of the `tools/list` results among `answers` (one JSON text) whose id is
/// in `ids` down to what `allowed` permits. `None` when nothing had to change (the bytes pass
/// as they came); else the new JSON text.
pub fn filter_tools_json(data: &[u8], ids: &[Id], allowed: &Allowed) -> Option<Vec<u8>> {
    if matches!(allowed, Allowed::All) || ids.is_empty() {
        return None;
    }
    let mut v: Value = serde_json::from_slice(data).ok()?;
    let changed = match &mut v {
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |c, m| filter_one(m, ids, allowed) | c),
        m => filter_one(m, ids, allowed),
    };
    changed.then(|| v.to_string().into_bytes())
}

fn filter_one(m: &mut Value, ids: &[Id], allowed: &Allowed) -> bool {
    let Some(id) = m.get("id") else { return false };
    if !ids.iter().any(|i| *i.0 == *id.to_string()) {
        return false;
    }
    let Some(Value::Array(tools)) = m.get_mut("result").and_then(|r| r.get_mut("tools")) else {
        return false;
    };
    let before = tools.len();
    tools.retain(|t| {
        t.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| allowed.permits(n))
    });
    tools.len() != before
}

/// [`filter_tools_json`] over a whole SSE body: each event's `data` is filtered, an event that
/// changed is written back as one `data:` line with its other fields (`event:`, `id:`) kept.
pub fn filter_tools_sse(body: &[u8], ids: &[Id], allowed: &Allowed) -> Option<Vec<u8>> {
    if matches!(allowed, Allowed::All) || ids.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut rest = body;
    while !rest.is_empty() {
        // One event: up to and including its blank line (`\n\n`, `\r\n\r\n`, mixed).
        let (event, after) = split_event(rest);
        rest = after;
        let mut data: Vec<u8> = Vec::new();
        let mut fields: Vec<&[u8]> = Vec::new();
        let mut has_data = false;
        for line in event.split(|b| *b == b'\n') {
            let l = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(d) = l.strip_prefix(b"data:") {
                let d = d.strip_prefix(b" ").unwrap_or(d);
                if has_data {
                    data.push(b'\n');
                }
                data.extend_from_slice(d);
                has_data = true;
            } else if !l.is_empty() {
                fields.push(l);
            }
        }
        match has_data
            .then(|| filter_tools_json(&data, ids, allowed))
            .flatten()
        {
            Some(new) => {
                changed = true;
                for f in fields {
                    out.extend_from_slice(f);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&new);
                out.extend_from_slice(b"\r\n\r\n");
            }
            None => out.extend_from_slice(event),
        }
    }
    changed.then_some(out)
}

/// The first event of `buf` (with its terminating blank line) and what follows it.
fn split_event(buf: &[u8]) -> (&[u8], &[u8]) {
    let mut line_start = 0;
    while let Some(nl) = memchr::memchr(b'\n', &buf[line_start..]) {
        let end = line_start + nl;
        let line = &buf[line_start..end];
        if (line.is_empty() || line == b"\r") && line_start > 0 {
            return (&buf[..end + 1], &buf[end + 1..]);
        }
        line_start = end + 1;
    }
    (buf, &[])
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use http::HeaderValue;

    use super::*;

    fn only(t: &[&str]) -> Allowed {
        Allowed::Only(t.iter().map(|s| s.to_string()).collect::<HashSet<_>>())
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"add","inputSchema":{}},{"name":"secret","inputSchema":{}}]}}"#;

    #[test]
    fn tools_list_is_cut_to_the_allowed_tools() {
        let ids = [Id("2".into())];
        let out = filter_tools_json(LIST.as_bytes(), &ids, &only(&["add"])).expect("changed");
        let v: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["id"], 2);
        assert_eq!(v["result"]["tools"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["result"]["tools"][0]["name"], "add");
        assert!(filter_tools_json(LIST.as_bytes(), &ids, &Allowed::All).is_none());
        assert!(filter_tools_json(LIST.as_bytes(), &[Id("9".into())], &only(&["add"])).is_none());
    }

    #[test]
    fn sse_events_are_rewritten_with_their_fields() {
        let body = format!(
            "event: message\r\nid: e1\r\ndata: {LIST}\r\n\r\n: keep-alive\r\n\r\nevent: message\r\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\r\n\r\n"
        );
        let ids = [Id("2".into())];
        let out = filter_tools_sse(body.as_bytes(), &ids, &only(&["add"])).expect("changed");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.starts_with("event: message\r\nid: e1\r\ndata: {"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains(": keep-alive\r\n\r\n"), "{text}");
        assert!(
            text.ends_with("notifications/progress\"}\r\n\r\n"),
            "{text}"
        );
    }

    #[test]
    fn modern_headers_must_match_the_body() {
        let mut h = HeaderMap::new();
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        h.insert("mcp-name", HeaderValue::from_static("add"));
        // Legacy: headers are not read.
        assert_eq!(check_headers(&h, "tools/call", Some("secret")), Ok(()));
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2026-07-28"),
        );
        assert_eq!(check_headers(&h, "tools/call", Some("add")), Ok(()));
        assert!(check_headers(&h, "tools/call", Some("secret")).is_err());
        assert!(check_headers(&h, "tools/list", None).is_err());
        // base64 form: "add"
        h.insert("mcp-name", HeaderValue::from_static("=?base64?YWRk?="));
        assert_eq!(check_headers(&h, "tools/call", Some("add")), Ok(()));
    }
}
