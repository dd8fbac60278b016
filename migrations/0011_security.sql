-- Who set an app's git:sync source: inbound webhooks run the sync with that key's rights (an
-- admin's source may reach private addresses; a removed key's or an ex-grantee's source no
-- longer runs).
ALTER TABLE syncs ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
