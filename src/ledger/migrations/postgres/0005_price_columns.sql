-- The price each row was costed at, so a price correction can be applied to past rows
-- (`tollgate reprice`) and finance can see which rows rest on no price at all.
ALTER TABLE tollgate_usage ADD COLUMN IF NOT EXISTS price_id TEXT;
ALTER TABLE tollgate_usage ADD COLUMN IF NOT EXISTS cost_source TEXT;
ALTER TABLE tollgate_usage ADD COLUMN IF NOT EXISTS service_tier TEXT;
