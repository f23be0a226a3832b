-- The response cache (src/cache): `cache_status` is hit, miss or bypass (NULL: the cache was off
-- or the request not cacheable); `saved_cost_nanos` is, on a hit, what the original request cost
-- (NULL otherwise). Nullable without a default: the migration does not rewrite the table.
ALTER TABLE tollgate_usage ADD COLUMN cache_status TEXT;
ALTER TABLE tollgate_usage ADD COLUMN saved_cost_nanos INTEGER;
