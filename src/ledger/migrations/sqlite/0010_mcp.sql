-- The MCP gateway (src/mcp): a row per tools/call, `endpoint = 'mcp'`, the server in `provider`,
-- the tool in `model` and `requested_model`. `mcp_outcome` is how the call ended (ok, tool_error,
-- rpc_error, http_error, timeout, client_gone, upstream_error, forbidden, limited, invalid);
-- `response_bytes` the size of the response body that answered it. NULL on every other row.
-- Nullable without a default: the migration does not rewrite the table.
ALTER TABLE tollgate_usage ADD COLUMN mcp_outcome TEXT;
ALTER TABLE tollgate_usage ADD COLUMN response_bytes INTEGER;
