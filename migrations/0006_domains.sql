-- Custom domains the HTTP router serves for an app (besides APP.<base_domain>).
CREATE TABLE domains (
    name       TEXT PRIMARY KEY,
    app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
