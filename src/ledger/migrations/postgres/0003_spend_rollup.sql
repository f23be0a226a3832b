-- Spend per UTC hour and (team, key, requested model), read when budgets are restored at
-- start-up. It replaces the indexes (team, started_at) and (key_name, started_at) on the rows:
-- with thousands of keys every insert batch dirtied a leaf page of each per key, and the
-- writer's cost per row grew with the number of keys. A rollup row is created once per group
-- and hour; later requests only add to `cost_nanos`, which no index holds (a HOT update).
CREATE TABLE IF NOT EXISTS tollgate_spend_hourly (
    hour            TIMESTAMPTZ NOT NULL,
    team            TEXT NOT NULL,
    key_name        TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    cost_nanos      BIGINT NOT NULL,
    PRIMARY KEY (hour, team, key_name, requested_model)
);
CREATE INDEX IF NOT EXISTS tollgate_spend_hourly_team ON tollgate_spend_hourly (team, hour);
CREATE INDEX IF NOT EXISTS tollgate_spend_hourly_key ON tollgate_spend_hourly (key_name, hour);
CREATE OR REPLACE FUNCTION tollgate_usage_spend() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tollgate_spend_hourly AS s (hour, team, key_name, requested_model, cost_nanos)
    SELECT date_trunc('hour', started_at, 'UTC'), team, key_name, requested_model,
        SUM(cost_nanos)
    FROM new_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (hour, team, key_name, requested_model) DO UPDATE SET
        cost_nanos = s.cost_nanos + EXCLUDED.cost_nanos;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS tollgate_usage_spend ON tollgate_usage;
CREATE TRIGGER tollgate_usage_spend AFTER INSERT ON tollgate_usage
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tollgate_usage_spend();
-- Rows written before this migration.
INSERT INTO tollgate_spend_hourly (hour, team, key_name, requested_model, cost_nanos)
SELECT date_trunc('hour', started_at, 'UTC'), team, key_name, requested_model, SUM(cost_nanos)
FROM tollgate_usage GROUP BY 1, 2, 3, 4;
DROP INDEX IF EXISTS tollgate_usage_team_started_at;
DROP INDEX IF EXISTS tollgate_usage_key_started_at;
