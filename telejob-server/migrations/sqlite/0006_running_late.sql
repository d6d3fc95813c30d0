-- A run that passed its job's usual duration by the configured margin ("running late"): when
-- it was marked, and the p95 and threshold it was measured against, as JSON. Set once, by one
-- conditional update, so that the notification goes out once.
ALTER TABLE runs ADD COLUMN late TEXT;
