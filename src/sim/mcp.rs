//! A minimal MCP server on the simulator's port: `POST /mcp`, Streamable HTTP answered in JSON,
//! stateless (no `Mcp-Session-Id`: every request stands alone, so the benchmark can send
//! `tools/call` without a handshake). One tool, `echo`, returns its `text` argument. It is the
//! server the benchmark puts behind the MCP gateway; the protocol's own tests use the official
//! SDK's server.

use serde_json::{Value, json};

/// The protocol version answered when the client asks for none (the handshake era's last
/// version before the stateless one).
const DEFAULT_VERSION: &str = "2025-06-18";

/// What one POST gets: the HTTP status and, unless it is 202 (notifications and responses,
/// which the protocol acknowledges without a body), the JSON body.
pub fn answer(body: &[u8]) -> (u16, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (400, Some(error(Value::Null, -32700, "Parse error")));
    };
    // A request has a method and an id; a notification or a client's response has no id.
    let (Some(method), Some(id)) = (v.get("method").and_then(Value::as_str), v.get("id")) else {
        return if v.is_object() {
            (202, None)
        } else {
            (400, Some(error(Value::Null, -32600, "Invalid Request")))
        };
    };
    let id = id.clone();
    let result = match method {
        "initialize" => {
            let version = v
                .pointer("/params/protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_VERSION);
            json!({
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": false}},
                "serverInfo": {"name": "tollgate-sim", "version": env!("CARGO_PKG_VERSION")},
            })
        }
        "ping" => json!({}),
        "tools/list" => json!({"tools": [{
            "name": "echo",
            "description": "Returns its text argument.",
            "inputSchema": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        }]}),
        "tools/call" => match v.pointer("/params/name").and_then(Value::as_str) {
            Some("echo") => {
                let text = v
                    .pointer("/params/arguments/text")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                json!({"content": [{"type": "text", "text": text}], "isError": false})
            }
            Some(other) => {
                return (
                    200,
                    Some(error(id, -32602, &format!("Unknown tool: {other}"))),
                );
            }
            None => return (200, Some(error(id, -32602, "Missing tool name"))),
        },
        other => {
            return (
                200,
                Some(error(id, -32601, &format!("Method not found: {other}"))),
            );
        }
    };
    (
        200,
        Some(json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()),
    )
}

fn error(id: Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(body: Value) -> (u16, Value) {
        let (status, text) = answer(body.to_string().as_bytes());
        (
            status,
            text.map_or(Value::Null, |t| serde_json::from_str(&t).expect("json")),
        )
    }

    #[test]
    fn initialize_list_and_echo() {
        let (s, v) = call(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}));
        assert_eq!(s, 200);
        assert_eq!(v["id"], 1);
        assert_eq!(v["result"]["protocolVersion"], "2025-03-26");
        assert!(v["result"]["capabilities"]["tools"].is_object());
        let (s, v) = call(json!({"jsonrpc": "2.0", "id": "a", "method": "tools/list"}));
        assert_eq!((s, v["id"].clone()), (200, json!("a")));
        assert_eq!(v["result"]["tools"][0]["name"], "echo");
        let (s, v) = call(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hello"}}}));
        assert_eq!(s, 200);
        assert_eq!(v["result"]["content"][0]["text"], "hello");
        assert_eq!(v["result"]["isError"], false);
    }

    #[test]
    fn notifications_are_accepted_and_errors_are_json_rpc() {
        assert_eq!(
            answer(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            (202, None)
        );
        let (s, v) = call(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "nope", "arguments": {}}}));
        assert_eq!((s, v["error"]["code"].clone()), (200, json!(-32602)));
        let (s, v) = call(json!({"jsonrpc": "2.0", "id": 3, "method": "resources/list"}));
        assert_eq!((s, v["error"]["code"].clone()), (200, json!(-32601)));
        let (s, text) = answer(b"not json");
        assert_eq!(s, 400);
        assert!(text.is_some_and(|t| t.contains("-32700")));
    }
}
