//! JSON-RPC 2.0 as MCP uses it: what a client's POST body holds (requests, notifications,
//! responses; one message or, in 2025-03-26, a batch array), what an answer says (a result,
//! `isError`, an error code), and the gateway's own error objects.
//!
//! Requests are read into small typed structs that skip what they do not name (tool arguments
//! are never built into a tree); a duplicated member is a parse error, so the gateway and the
//! server cannot read different tool names out of one body.

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

/// Standard and MCP error codes (schema.ts).
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a JSON-RPC message.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad params, and unknown tools (the spec's example for "Unknown tool").
    pub const INVALID_PARAMS: i64 = -32602;
    /// Server failure.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// 2026-07-28: a request-metadata header disagrees with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28: a required client capability is missing.
    pub const MISSING_CAPABILITY: i64 = -32021;
    /// 2026-07-28: the protocol version is not supported.
    pub const UNSUPPORTED_VERSION: i64 = -32022;
    /// The gateway's: a rate limit or budget of the caller, server or tool is spent
    /// (implementation-defined range -32000..-32019).
    pub const LIMITED: i64 = -32000;
    /// The gateway's: the upstream server did not answer (unreachable or too slow).
    pub const UPSTREAM_UNAVAILABLE: i64 = -32001;
}

/// A JSON-RPC id, as its JSON text (`1`, `"abc"`): ids are matched, never rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(pub Box<str>);

impl Id {
    fn of(v: &Value) -> Id {
        Id(v.to_string().into_boxed_str())
    }
}

/// What one client message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request: answered by a response with its id.
    Request {
        /// Its id.
        id: Id,
        /// The id as it was, for error responses the gateway writes.
        raw_id: Value,
        /// The method.
        method: Box<str>,
        /// `tools/call`: `params.name`.
        tool: Option<Box<str>>,
    },
    /// A notification (no id): answered by nothing (202).
    Notification {
        /// The method.
        method: Box<str>,
    },
    /// The client's response to a server's request (sampling, elicitation, roots).
    Response,
}

/// Why a client body was refused before forwarding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON (or a duplicated member).
    #[error("Parse error: {0}")]
    Json(String),
    /// JSON, but not a JSON-RPC message (or an empty batch).
    #[error("Invalid Request: {0}")]
    Invalid(&'static str),
}

impl ParseError {
    /// The JSON-RPC code.
    pub fn code(&self) -> i64 {
        match self {
            ParseError::Json(_) => code::PARSE_ERROR,
            ParseError::Invalid(_) => code::INVALID_REQUEST,
        }
    }

    /// The bounded `error_type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            ParseError::Json(_) => "parse_error",
            ParseError::Invalid(_) => "invalid_request",
        }
    }
}

#[derive(Deserialize)]
struct Envelope {
    jsonrpc: Option<String>,
    id: Option<Value>,
    method: Option<String>,
    params: Option<Params>,
    result: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Params {
    name: Option<Value>,
}

/// A client's POST body: its messages, and whether it was a batch array.
#[derive(Debug)]
pub struct Body {
    /// In order.
    pub messages: Vec<Message>,
    /// `[...]` (2025-03-26 batching).
    pub batch: bool,
}

/// Most messages in one batch: a batch fans out into as many limiter checks and series.
pub const MAX_BATCH: usize = 100;

/// Reads a client's POST body.
pub fn parse_body(bytes: &[u8]) -> Result<Body, ParseError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<Envelope> =
            serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
        if items.is_empty() {
            return Err(ParseError::Invalid("empty batch"));
        }
        if items.len() > MAX_BATCH {
            return Err(ParseError::Invalid("batch of more than 100 messages"));
        }
        let messages = items
            .into_iter()
            .map(message)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Body {
            messages,
            batch: true,
        });
    }
    let e: Envelope = serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    Ok(Body {
        messages: vec![message(e)?],
        batch: false,
    })
}

fn message(e: Envelope) -> Result<Message, ParseError> {
    if e.jsonrpc.as_deref() != Some("2.0") {
        return Err(ParseError::Invalid("\"jsonrpc\" must be \"2.0\""));
    }
    match (e.method, e.id) {
        (Some(method), Some(id)) => {
            if !(id.is_string() || id.is_number()) {
                return Err(ParseError::Invalid("\"id\" must be a string or a number"));
            }
            let tool = if method == "tools/call" {
                match e.params.and_then(|p| p.name) {
                    Some(Value::String(s)) => Some(s.into_boxed_str()),
                    _ => {
                        return Err(ParseError::Invalid(
                            "tools/call needs params.name, a string",
                        ));
                    }
                }
            } else {
                None
            };
            Ok(Message::Request {
                id: Id::of(&id),
                raw_id: id,
                method: method.into_boxed_str(),
                tool,
            })
        }
        (Some(method), None) => Ok(Message::Notification {
            method: method.into_boxed_str(),
        }),
        (None, Some(_)) if e.result.is_some() || e.error.is_some() => Ok(Message::Response),
        _ => Err(ParseError::Invalid(
            "neither a request, a notification nor a response",
        )),
    }
}

/// How a response answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A result (`isError` false or absent).
    Result,
    /// A tool result with `isError: true`: the tool ran and failed.
    ToolError,
    /// A JSON-RPC error with this code.
    Error(i64),
}

#[derive(Deserialize)]
struct ReplyEnvelope {
    id: Option<Value>,
    method: Option<IgnoredAny>,
    result: Option<ResultFacts>,
    error: Option<ErrorObject>,
}

/// What a result says for metering: only `isError`. Read without building the result's tree
/// (a tool result may be megabytes); a result that is not an object is a plain result.
#[derive(Default)]
struct ResultFacts {
    is_error: bool,
}

impl<'de> Deserialize<'de> for ResultFacts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ResultFacts, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ResultFacts;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC result")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<ResultFacts, A::Error> {
                let mut facts = ResultFacts::default();
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    if k == "isError" {
                        facts.is_error = m.next_value::<Option<bool>>()?.unwrap_or(false);
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(facts)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<ResultFacts, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ResultFacts::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<ResultFacts, E> {
                Ok(ResultFacts::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<ResultFacts, E> {
                Ok(ResultFacts::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<ResultFacts, E> {
                Ok(ResultFacts::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<ResultFacts, E> {
                Ok(ResultFacts::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<ResultFacts, E> {
                Ok(ResultFacts::default())
            }
            fn visit_unit<E>(self) -> Result<ResultFacts, E> {
                Ok(ResultFacts::default())
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct ErrorObject {
    code: Option<i64>,
}

fn answer_of(r: ReplyEnvelope) -> Option<(Option<Id>, Answer)> {
    if r.method.is_some() {
        return None; // a server's request or notification, not an answer
    }
    let id = r.id.as_ref().filter(|v| !v.is_null()).map(Id::of);
    if let Some(e) = r.error {
        return Some((id, Answer::Error(e.code.unwrap_or(code::INTERNAL_ERROR))));
    }
    let result = r.result?;
    Some((
        id,
        if result.is_error {
            Answer::ToolError
        } else {
            Answer::Result
        },
    ))
}

/// The answers in one JSON text (a response body or one SSE event's data): `(id, answer)`,
/// the id `None` for an id-less error (the server's "Session not found" and the like).
pub fn answers(data: &[u8], out: &mut Vec<(Option<Id>, Answer)>) {
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') => {
            if let Ok(r) = serde_json::from_slice::<ReplyEnvelope>(data) {
                out.extend(answer_of(r));
            }
        }
        Some(b'[') => {
            if let Ok(rs) = serde_json::from_slice::<Vec<ReplyEnvelope>>(data) {
                out.extend(rs.into_iter().filter_map(answer_of));
            }
        }
        _ => {}
    }
}

/// The method as a label: MCP's own names (both eras) pass, anything else is `__other__`
/// (clients choose the method, and each value would be a series).
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "subscriptions/listen",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/message",
        "notifications/roots/list_changed",
        "notifications/tasks/status",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or(crate::metrics::OVERFLOW_VALUE)
}

/// A JSON-RPC error code as a bounded `error_type`.
pub fn code_error_type(c: i64) -> &'static str {
    match c {
        code::PARSE_ERROR => "parse_error",
        code::INVALID_REQUEST => "invalid_request",
        code::METHOD_NOT_FOUND => "method_not_found",
        code::INVALID_PARAMS => "invalid_params",
        code::INTERNAL_ERROR => "internal_error",
        code::HEADER_MISMATCH => "header_mismatch",
        code::MISSING_CAPABILITY => "missing_capability",
        code::UNSUPPORTED_VERSION => "unsupported_protocol_version",
        -32099..=-32000 => "server_error",
        _ => "other_error",
    }
}

/// A JSON-RPC error response `{"jsonrpc":"2.0","id":…,"error":{…}}`.
pub fn error_object(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = serde_json::json!({"code": code, "message": message});
    if let (Some(d), Some(o)) = (data, error.as_object_mut()) {
        o.insert("data".into(), d);
    }
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error})
}

/// [`error_object`] as bytes.
pub fn error_body(id: &Value, code: i64, message: &str, data: Option<Value>) -> Bytes {
    Bytes::from(error_object(id, code, message, data).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_notifications_and_responses() {
        let b = parse_body(
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":[1,{"name":"x"}]}}}"#,
        )
        .expect("parses");
        assert!(!b.batch);
        match &b.messages[0] {
            Message::Request {
                id, method, tool, ..
            } => {
                assert_eq!(&*id.0, "3");
                assert_eq!(&**method, "tools/call");
                assert_eq!(tool.as_deref(), Some("add"));
            }
            m => panic!("{m:?}"),
        }
        let b = parse_body(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .expect("parses");
        assert!(matches!(b.messages[0], Message::Notification { .. }));
        let b = parse_body(br#"[{"jsonrpc":"2.0","id":"a","result":{}}]"#).expect("parses");
        assert!(b.batch);
        assert_eq!(b.messages, vec![Message::Response]);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for (body, code) in [
            (&b"{not json"[..], code::PARSE_ERROR),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#, code::PARSE_ERROR),
            (br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#, code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#, code::INVALID_REQUEST),
            (br#"[]"#, code::INVALID_REQUEST),
            (br#"42"#, code::PARSE_ERROR),
        ] {
            let e = parse_body(body).expect_err(std::str::from_utf8(body).unwrap_or(""));
            assert_eq!(e.code(), code, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn answers_say_how_a_request_ended() {
        let mut out = Vec::new();
        answers(
            br#"{"jsonrpc":"2.0","id":3,"result":{"content":[],"isError":true}}"#,
            &mut out,
        );
        answers(
            br#"{"jsonrpc":"2.0","id":"x","result":{"tools":[]}}"#,
            &mut out,
        );
        answers(
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Session not found"}}"#,
            &mut out,
        );
        answers(
            br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
            &mut out,
        );
        answers(b"", &mut out);
        answers(br#"{"jsonrpc":"2.0","id":7,"result":5}"#, &mut out);
        answers(
            br#"{"jsonrpc":"2.0","id":8,"result":{"content":[{"isError":true}],"isError":false}}"#,
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                (Some(Id("3".into())), Answer::ToolError),
                (Some(Id("\"x\"".into())), Answer::Result),
                (None, Answer::Error(-32600)),
                (Some(Id("7".into())), Answer::Result),
                (Some(Id("8".into())), Answer::Result),
            ]
        );
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label("tools/call"), "tools/call");
        assert_eq!(method_label("x".repeat(1000).as_str()), "__other__");
        assert_eq!(code_error_type(-32010), "server_error");
        assert_eq!(code_error_type(7), "other_error");
    }
}
