//! The MCP gateway: Model Context Protocol servers behind the gateway at `/mcp/{name}`, for
//! both protocol eras (the 2025-03-26..2025-11-25 session era and the stateless 2026-07-28
//! era), proxied transparently over Streamable HTTP and metered per JSON-RPC message.
//!
//! - `config.rs`: `[[mcp_servers]]`, validated (tool lists per team and key, tool costs,
//!   limits of servers and tools);
//! - `proxy.rs`: the phases of one request, in order; `admit.rs` (limits) and `forward.rs`
//!   (the upstream request, the response passed back) beside it;
//! - `jsonrpc.rs`: the messages of a client body and the answers of a server's;
//! - `policy.rs`: forbidden tools, `tools/list` filtering, the request-metadata headers;
//! - `exchange.rs`: one HTTP exchange's messages and their one settlement (metrics, ledger
//!   rows, limiter);
//! - `body.rs`: the response body, passed through frame by frame.
//!
//! Dependencies: `server -> mcp -> proxy` (authentication, body reading, upstream
//! connections, SSE scanning), `mcp -> limits`, `mcp -> ledger`, `mcp -> metrics`.

pub mod admit;
pub mod body;
pub mod config;
pub mod exchange;
pub mod forward;
pub mod jsonrpc;
pub mod policy;
pub mod proxy;

pub use body::McpBody;
pub use config::McpConfig;
pub use proxy::handle;
