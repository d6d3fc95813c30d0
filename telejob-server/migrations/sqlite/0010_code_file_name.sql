-- The name of the file a code version was uploaded as (the dashboard's file field, or the
-- Content-Disposition of an API upload); NULL when none was given.
ALTER TABLE code_versions ADD COLUMN file_name TEXT;
