//! Tollgate: an LLM gateway that meters every token.
//!
//! Modules, each one concern:
//! - [`config`]: the TOML file, `${ENV}` secrets, validation with key paths;
//! - [`server`]: listeners, routing, graceful shutdown, connection caps and timeouts;
//! - [`proxy`]: the request path (authenticate, read, route, forward, tap, settle);
//! - [`providers`]: one module per provider kind (openai, anthropic, azure-openai, gemini,
//!   bedrock, vertex), each
//!   implementing [`providers::Provider`] and registered in [`providers::ProviderKind`];
//! - [`metering`]: normalised [`metering::Usage`], the price table, token estimates;
//! - [`metrics`]: every metric family and the Prometheus/OpenMetrics exposition;
//! - [`ledger`]: one usage row per request, batched into SQLite or PostgreSQL, and the usage
//!   reports;
//! - [`cache`]: the response cache (exact and semantic), looked up after admission and stored at
//!   settlement;
//! - [`billing`]: the providers' billing APIs polled into the ledger database, and the bill
//!   reconciled with the ledger per provider, model and day;
//! - [`mcp`]: the MCP gateway: Model Context Protocol servers at `/mcp/{name}`, proxied
//!   transparently (both protocol eras), metered per JSON-RPC message, tools allowed per team
//!   and key, limited per server and tool;
//! - [`sim`]: the simulated provider used by `tollgate demo`, the tests and the benchmark;
//! - [`demo`]: the demo: simulated provider, gateway and a little synthetic traffic.
//!
//! The request path: the server routes `POST /v1/...` to [`proxy::Gateway::forward`], which
//! authenticates the virtual key (hashed lookup), reads the body (bounded), parses only the
//! fields it needs (`model`, `stream`, `stream_options`), picks the provider by model, splices
//! `stream_options.include_usage` into OpenAI-format streams when the client did not ask for
//! it, swaps the client's key for the provider's, and forwards. The response body is returned
//! wrapped in a [`proxy::tap::TapBody`], which passes every frame on as it arrives and reads
//! usage from the JSON body, the SSE events or AWS event-stream messages; when the body ends, breaks, or the client goes
//! away, [`proxy::PendingRequest`] settles exactly once; on a worker thread the usage,
//! cost, limits, metrics and the [`ledger::UsageRow`] (handed to the ledger's writer without
//! waiting) are recorded just after the response's last bytes are written.

#![forbid(unsafe_code)]

pub mod billing;
pub mod cache;
pub mod config;
pub mod demo;
pub mod ledger;
pub mod limits;
pub mod mcp;
pub mod metering;
pub mod metrics;
pub mod providers;
pub mod proxy;
pub mod server;
pub mod sim;
pub mod translate;
