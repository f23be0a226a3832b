-- One row per finished request. Times are microseconds since the Unix epoch (UTC).
CREATE TABLE IF NOT EXISTS tollgate_usage (
    id                    TEXT PRIMARY KEY NOT NULL,
    started_at            INTEGER NOT NULL,
    duration_us           INTEGER NOT NULL,
    ttft_us               INTEGER,
    key_name              TEXT NOT NULL,
    team                  TEXT NOT NULL,
    customer              TEXT,
    provider              TEXT NOT NULL,
    requested_model       TEXT NOT NULL,
    model                 TEXT NOT NULL,
    endpoint              TEXT NOT NULL,
    stream                INTEGER NOT NULL,
    status_code           INTEGER NOT NULL,
    error_type            TEXT,
    input_tokens          INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    cached_read_tokens    INTEGER NOT NULL,
    cache_write_tokens    INTEGER NOT NULL,
    cache_write_1h_tokens INTEGER NOT NULL,
    reasoning_tokens      INTEGER NOT NULL,
    cost_nanos            INTEGER NOT NULL,
    estimated             INTEGER NOT NULL,
    upstream_request_id   TEXT
);
-- Time windows: covering for the ledger gauges (team, provider, model, cost), so the
-- per-scrape query reads the index only.
CREATE INDEX IF NOT EXISTS tollgate_usage_started_at
    ON tollgate_usage (started_at, team, provider, model, cost_nanos);
-- Spend of one team or one key since a time (budgets at start-up).
CREATE INDEX IF NOT EXISTS tollgate_usage_team_started_at ON tollgate_usage (team, started_at);
CREATE INDEX IF NOT EXISTS tollgate_usage_key_started_at ON tollgate_usage (key_name, started_at);
