-- Spend per UTC hour and (team, key, requested model), read when budgets are restored at
-- start-up. It replaces the indexes (team, started_at) and (key_name, started_at) on the rows:
-- with thousands of keys every insert batch dirtied a leaf page of each per key, and the
-- writer's cost per row grew with the number of keys (bench: +70 % CPU per request from 10 to
-- 1,000 keys). A rollup row is created once per group and hour; later requests only add to
-- `cost_nanos`, which no index holds, and the current hour's rows sit together in the primary
-- key, so a batch dirties a few pages whatever the number of keys.
CREATE TABLE IF NOT EXISTS tollgate_spend_hourly (
    hour            INTEGER NOT NULL,
    team            TEXT NOT NULL,
    key_name        TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    cost_nanos      INTEGER NOT NULL,
    PRIMARY KEY (hour, team, key_name, requested_model)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tollgate_spend_hourly_team ON tollgate_spend_hourly (team, hour);
CREATE INDEX IF NOT EXISTS tollgate_spend_hourly_key ON tollgate_spend_hourly (key_name, hour);
CREATE TRIGGER IF NOT EXISTS tollgate_usage_spend AFTER INSERT ON tollgate_usage
BEGIN
    INSERT INTO tollgate_spend_hourly (hour, team, key_name, requested_model, cost_nanos)
    VALUES (NEW.started_at - NEW.started_at % 3600000000, NEW.team, NEW.key_name,
        NEW.requested_model, NEW.cost_nanos)
    ON CONFLICT (hour, team, key_name, requested_model) DO UPDATE SET
        cost_nanos = cost_nanos + excluded.cost_nanos;
END;
-- Rows written before this migration.
INSERT INTO tollgate_spend_hourly (hour, team, key_name, requested_model, cost_nanos)
SELECT started_at - started_at % 3600000000, team, key_name, requested_model, SUM(cost_nanos)
FROM tollgate_usage WHERE true GROUP BY 1, 2, 3, 4;
DROP INDEX IF EXISTS tollgate_usage_team_started_at;
DROP INDEX IF EXISTS tollgate_usage_key_started_at;
