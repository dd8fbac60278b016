-- Persistent storage (storage:mount): a named volume berth owns (`kind` volume, `source` is the
-- engine's volume name, fixed when it is made so a rename keeps the data) or a host directory
-- (`kind` host, admins only). Mounted at `path` in every process of every release.
CREATE TABLE mounts (
    app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('volume', 'host')),
    source     TEXT NOT NULL,
    path       TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (app_id, path)
);

-- apps:link APP DEP --as NAME: APP gets NAME_URL, NAME_HOST, NAME_PORT pointing at DEP.
CREATE TABLE links (
    app_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    dep_id     INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    alias      TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (app_id, dep_id),
    UNIQUE (app_id, alias)
);

-- Outbound webhooks: events (comma-separated names, or '*') of one app or of all (app_id NULL),
-- POSTed to url signed with secret.
CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,
    app_id     INTEGER REFERENCES apps(id) ON DELETE CASCADE,
    secret     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

-- One event for one webhook: pending until answered 2xx (delivered) or out of attempts (failed).
CREATE TABLE deliveries (
    id         INTEGER PRIMARY KEY,
    webhook_id INTEGER NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event      TEXT NOT NULL,
    app        TEXT,
    payload    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts   INTEGER NOT NULL DEFAULT 0,
    response   TEXT NOT NULL DEFAULT '',
    next_at    INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX deliveries_pending ON deliveries (status, next_at);

-- git:sync APP URL [REF]: where the app's code comes from when berth fetches it; token_hash is
-- the SHA-256 (hex) of the inbound webhook's token (webhooks:inbound), refused counts wrong tokens.
CREATE TABLE syncs (
    app_id     INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    url        TEXT NOT NULL,
    git_ref    TEXT,
    token_hash TEXT,
    refused    INTEGER NOT NULL DEFAULT 0
);

-- Small server-wide values (the webhook dispatcher's last event id).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
