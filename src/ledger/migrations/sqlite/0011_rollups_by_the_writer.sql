-- The rollups tollgate_usage_hourly and tollgate_spend_hourly are now kept by the writer: it
-- sums the rows each batch insert actually added and upserts the sums in the batch's own
-- transaction (src/ledger/rollup.rs). The triggers did it a row at a time, 19,100 of the
-- 39,500 instructions SQLite spent on a row (callgrind, bench/results/2026-12-03-profile.md).
-- Rows inserted by hand are no longer added to the rollups.
DROP TRIGGER IF EXISTS tollgate_usage_rollup;
DROP TRIGGER IF EXISTS tollgate_usage_spend;
