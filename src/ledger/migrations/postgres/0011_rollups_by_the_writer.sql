-- The rollups tollgate_usage_hourly and tollgate_spend_hourly are now kept by the writer: it
-- sums the rows each batch insert actually added (RETURNING id) and upserts the sums in the
-- batch's own transaction (src/ledger/rollup.rs), instead of two statement triggers. Every
-- replica writing to this database must run a version that does (one without writer rollups
-- would add rows the rollups never see). Rows inserted by hand are no longer added to them.
DROP TRIGGER IF EXISTS tollgate_usage_rollup ON tollgate_usage;
DROP TRIGGER IF EXISTS tollgate_usage_spend ON tollgate_usage;
DROP FUNCTION IF EXISTS tollgate_usage_rollup();
DROP FUNCTION IF EXISTS tollgate_usage_spend();
