-- What the current code says about the current command (the script missing from it, or not
-- executable): kept with the job, so that its pages and the list can show that its runs will
-- fail, long after the save that told it. JSON: [{"field", "message"}]; NULL: nothing to say.
ALTER TABLE jobs ADD COLUMN code_warnings TEXT;
