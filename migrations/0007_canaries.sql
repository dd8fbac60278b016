-- An app's canary: a release served beside the current one for `weight` % of requests.
-- release_id NULL: the next push becomes the canary.
CREATE TABLE canaries (
    app_id     INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    weight     INTEGER NOT NULL CHECK (weight BETWEEN 0 AND 100),
    release_id INTEGER REFERENCES releases(id),
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
