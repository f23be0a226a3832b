-- Where a row's token counts come from: reported, partial, estimated or implausible (counts
-- above [metering] max_tokens_per_request, clamped to it). Rows written before this migration (6)
-- keep NULL, read as `estimated` when `estimated` is set and `reported` otherwise: adding a
-- nullable column without a default changes only the catalog, not the table's rows.
ALTER TABLE tollgate_usage ADD COLUMN IF NOT EXISTS usage_source TEXT;
