-- Where an app's certificate (files under <data_dir>/certs/APP) came from: `manual`
-- (certs:add) or `acme` (letsencrypt:enable; renewed by berth).
CREATE TABLE certificates (
    app_id     INTEGER PRIMARY KEY REFERENCES apps(id) ON DELETE CASCADE,
    source     TEXT NOT NULL CHECK (source IN ('manual', 'acme')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
