-- Where a row's token counts come from: reported, partial, estimated or implausible (counts
-- above [metering] max_tokens_per_request, clamped to it). Rows written before this migration (6)
-- keep NULL, read as `estimated` when `estimated` is set and `reported` otherwise, so that the
-- migration adds a column without rewriting the table.
ALTER TABLE tollgate_usage ADD COLUMN usage_source TEXT;
