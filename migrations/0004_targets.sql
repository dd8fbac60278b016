-- The deploy target of each app (none: the server's default) and its resources per process type.
ALTER TABLE apps ADD COLUMN target TEXT;
ALTER TABLE apps ADD COLUMN resources TEXT NOT NULL DEFAULT '{}';
