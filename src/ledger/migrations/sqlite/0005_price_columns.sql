-- The price each row was costed at, so a price correction can be applied to past rows
-- (`tollgate reprice`) and finance can see which rows rest on no price at all.
ALTER TABLE tollgate_usage ADD COLUMN price_id TEXT;          -- `model` or `model@YYYY-MM-DD`; NULL: unpriced
ALTER TABLE tollgate_usage ADD COLUMN cost_source TEXT;       -- priced | unpriced (NULL before this migration)
ALTER TABLE tollgate_usage ADD COLUMN service_tier TEXT;      -- standard | priority | flex | batch
