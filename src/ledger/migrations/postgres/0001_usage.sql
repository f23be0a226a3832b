-- One row per finished request.
CREATE TABLE IF NOT EXISTS tollgate_usage (
    id                    UUID PRIMARY KEY,
    started_at            TIMESTAMPTZ NOT NULL,
    duration_us           BIGINT NOT NULL,
    ttft_us               BIGINT,
    key_name              TEXT NOT NULL,
    team                  TEXT NOT NULL,
    customer              TEXT,
    provider              TEXT NOT NULL,
    requested_model       TEXT NOT NULL,
    model                 TEXT NOT NULL,
    endpoint              TEXT NOT NULL,
    stream                BOOLEAN NOT NULL,
    status_code           INTEGER NOT NULL,
    error_type            TEXT,
    input_tokens          BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    cached_read_tokens    BIGINT NOT NULL,
    cache_write_tokens    BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    reasoning_tokens      BIGINT NOT NULL,
    cost_nanos            BIGINT NOT NULL,
    estimated             BOOLEAN NOT NULL,
    upstream_request_id   TEXT
);
-- Time windows: covering for the ledger gauges (index-only scans once vacuumed).
CREATE INDEX IF NOT EXISTS tollgate_usage_started_at
    ON tollgate_usage (started_at) INCLUDE (team, provider, model, cost_nanos);
-- Spend of one team or one key since a time (budgets at start-up).
CREATE INDEX IF NOT EXISTS tollgate_usage_team_started_at ON tollgate_usage (team, started_at);
CREATE INDEX IF NOT EXISTS tollgate_usage_key_started_at ON tollgate_usage (key_name, started_at);
