-- A job being deleted: set before its runs are stopped and its data purged. Runs of the job
-- ask before every batch of published files and before the manifest, and write nothing more
-- once it is set (the publish fence).
ALTER TABLE jobs ADD COLUMN deleting_since TEXT;

-- A purged job whose runs held store credentials that outlive them (EC2): its name stays
-- reserved to its owner until then; whoever takes it next finds the prefix purged again.
ALTER TABLE tombstones ADD COLUMN free_after TEXT;
