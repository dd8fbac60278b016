-- The stable port berth's proxy listens on for each app, kept across releases and restarts.
ALTER TABLE apps ADD COLUMN port INTEGER;
