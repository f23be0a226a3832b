-- The providers' bills, imported by the billing poller (src/billing): one row per (source,
-- day, dataset, model, project or workspace, API key, line item or token type, service
-- tier). A fetch replaces the days it covers (providers revise the last few days), so a
-- re-fetch never adds to a day. Empty strings stand for "not grouped". Money in nano-USD.
CREATE TABLE IF NOT EXISTS tollgate_billing (
    source       TEXT NOT NULL,
    day          TEXT NOT NULL, -- YYYY-MM-DD, UTC
    dataset      TEXT NOT NULL, -- cost | usage
    model        TEXT NOT NULL,
    project      TEXT NOT NULL,
    api_key      TEXT NOT NULL,
    item         TEXT NOT NULL,
    service_tier TEXT NOT NULL,
    cost_nanos   INTEGER NOT NULL,
    quantity     INTEGER NOT NULL,
    fetched_at   INTEGER NOT NULL, -- microseconds since the epoch
    PRIMARY KEY (source, day, dataset, model, project, api_key, item, service_tier)
) WITHOUT ROWID;
-- Every fetch: when, which days, and how it ended (ok, or the bounded reason).
CREATE TABLE IF NOT EXISTS tollgate_billing_fetches (
    source      TEXT NOT NULL,
    started_at  INTEGER NOT NULL, -- microseconds since the epoch
    finished_at INTEGER NOT NULL,
    from_day    TEXT NOT NULL,
    to_day      TEXT NOT NULL, -- exclusive
    outcome     TEXT NOT NULL, -- ok | unauthorized | rate_limited | server_error | ...
    lines       INTEGER NOT NULL,
    message     TEXT NOT NULL,
    PRIMARY KEY (source, started_at)
);
