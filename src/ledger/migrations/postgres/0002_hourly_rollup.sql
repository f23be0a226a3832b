-- Requests, tokens and cost per UTC hour and (team, provider, model), kept by a statement
-- trigger from the rows each INSERT actually added (a retried batch whose rows are ignored adds
-- nothing), so that the gauges and hour-aligned reports read a few rows per hour instead of
-- every request.
CREATE TABLE IF NOT EXISTS tollgate_usage_hourly (
    hour               TIMESTAMPTZ NOT NULL,
    team               TEXT NOT NULL,
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    requests           BIGINT NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cached_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    reasoning_tokens   BIGINT NOT NULL,
    cost_nanos         BIGINT NOT NULL,
    PRIMARY KEY (hour, team, provider, model)
);
CREATE OR REPLACE FUNCTION tollgate_usage_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tollgate_usage_hourly AS h (hour, team, provider, model, requests, input_tokens,
        output_tokens, cached_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos)
    SELECT date_trunc('hour', started_at, 'UTC'), team, provider, model, COUNT(*),
        SUM(input_tokens), SUM(output_tokens), SUM(cached_read_tokens), SUM(cache_write_tokens),
        SUM(reasoning_tokens), SUM(cost_nanos)
    FROM new_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (hour, team, provider, model) DO UPDATE SET
        requests = h.requests + EXCLUDED.requests,
        input_tokens = h.input_tokens + EXCLUDED.input_tokens,
        output_tokens = h.output_tokens + EXCLUDED.output_tokens,
        cached_read_tokens = h.cached_read_tokens + EXCLUDED.cached_read_tokens,
        cache_write_tokens = h.cache_write_tokens + EXCLUDED.cache_write_tokens,
        reasoning_tokens = h.reasoning_tokens + EXCLUDED.reasoning_tokens,
        cost_nanos = h.cost_nanos + EXCLUDED.cost_nanos;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS tollgate_usage_rollup ON tollgate_usage;
CREATE TRIGGER tollgate_usage_rollup AFTER INSERT ON tollgate_usage
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tollgate_usage_rollup();
-- Rows written before this migration.
INSERT INTO tollgate_usage_hourly (hour, team, provider, model, requests, input_tokens,
    output_tokens, cached_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos)
SELECT date_trunc('hour', started_at, 'UTC'), team, provider, model, COUNT(*), SUM(input_tokens),
    SUM(output_tokens), SUM(cached_read_tokens), SUM(cache_write_tokens), SUM(reasoning_tokens),
    SUM(cost_nanos)
FROM tollgate_usage GROUP BY 1, 2, 3, 4;
