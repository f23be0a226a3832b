-- The provider's endpoint when the gateway translated the request (an OpenAI-format client
-- calling an Anthropic model: endpoint /v1/chat/completions, upstream_endpoint /v1/messages);
-- NULL when the client's endpoint is the one called upstream.
ALTER TABLE tollgate_usage ADD COLUMN upstream_endpoint TEXT;
