-- Requests, tokens and cost per UTC hour and (team, provider, model), kept by a trigger on
-- every row actually inserted (a retried batch whose rows are ignored adds nothing), so that
-- the gauges and hour-aligned reports read a few rows per hour instead of every request.
CREATE TABLE IF NOT EXISTS tollgate_usage_hourly (
    hour               INTEGER NOT NULL, -- start of the hour, microseconds since the epoch
    team               TEXT NOT NULL,
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    requests           INTEGER NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cached_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens   INTEGER NOT NULL,
    cost_nanos         INTEGER NOT NULL,
    PRIMARY KEY (hour, team, provider, model)
);
CREATE TRIGGER IF NOT EXISTS tollgate_usage_rollup AFTER INSERT ON tollgate_usage
BEGIN
    INSERT INTO tollgate_usage_hourly (hour, team, provider, model, requests, input_tokens,
        output_tokens, cached_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos)
    VALUES (NEW.started_at - NEW.started_at % 3600000000, NEW.team, NEW.provider, NEW.model, 1,
        NEW.input_tokens, NEW.output_tokens, NEW.cached_read_tokens, NEW.cache_write_tokens,
        NEW.reasoning_tokens, NEW.cost_nanos)
    ON CONFLICT (hour, team, provider, model) DO UPDATE SET
        requests = requests + 1,
        input_tokens = input_tokens + excluded.input_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        cached_read_tokens = cached_read_tokens + excluded.cached_read_tokens,
        cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_nanos = cost_nanos + excluded.cost_nanos;
END;
-- Rows written before this migration.
INSERT INTO tollgate_usage_hourly (hour, team, provider, model, requests, input_tokens,
    output_tokens, cached_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos)
SELECT started_at - started_at % 3600000000, team, provider, model, COUNT(*), SUM(input_tokens),
    SUM(output_tokens), SUM(cached_read_tokens), SUM(cache_write_tokens), SUM(reasoning_tokens),
    SUM(cost_nanos)
FROM tollgate_usage WHERE true GROUP BY 1, 2, 3, 4;
