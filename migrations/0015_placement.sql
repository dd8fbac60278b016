-- Swarm placement constraints of each app (`apps:set APP placement=...`), as a JSON list.
ALTER TABLE apps ADD COLUMN placement TEXT NOT NULL DEFAULT '[]';
