-- Finding 31: the audit trail outlives its app. Events keep the app's name as it was when they
-- happened, and a destroyed app's events stay (app_id becomes NULL).
CREATE TABLE events_kept (
    id         INTEGER PRIMARY KEY,
    app_id     INTEGER REFERENCES apps(id) ON DELETE SET NULL,
    app_name   TEXT NOT NULL DEFAULT '',
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
INSERT INTO events_kept (id, app_id, app_name, kind, actor, outcome, detail, created_at)
    SELECT events.id, events.app_id, COALESCE(apps.name, ''), events.kind, events.actor,
           events.outcome, events.detail, events.created_at
    FROM events LEFT JOIN apps ON apps.id = events.app_id;
DROP TABLE events;
ALTER TABLE events_kept RENAME TO events;
CREATE INDEX events_app ON events (app_id, id);
CREATE INDEX events_app_name ON events (app_name, id);

-- Finding 12: an app's volumes are named and labeled by an id no later app gets (SQLite reuses
-- the highest rowid after a delete, so apps.id is not enough).
ALTER TABLE apps ADD COLUMN uid TEXT NOT NULL DEFAULT '';
UPDATE apps SET uid = lower(hex(randomblob(8)));

-- Finding 11: a member's custom domain is served (and certified) only once an admin approved
-- it; domains added before this stay served.
ALTER TABLE domains ADD COLUMN approved INTEGER NOT NULL DEFAULT 1;

-- Finding 17: the registry digest of a release's image, recorded when it was pushed; the image
-- is pulled back by that digest, never by its tag (which anyone who can write the registry
-- could move). Releases reusing an image copy it.
ALTER TABLE releases ADD COLUMN digest TEXT;
