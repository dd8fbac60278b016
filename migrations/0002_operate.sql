-- Labels, formation and the desired run state of each app; config vars; grants.
ALTER TABLE apps ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE apps ADD COLUMN formation TEXT NOT NULL DEFAULT '{"web":1}';
ALTER TABLE apps ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;

-- The config each release ran with (JSON object), so rollback brings it back.
ALTER TABLE releases ADD COLUMN config TEXT NOT NULL DEFAULT '{}';

CREATE TABLE config_vars (
    app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (app_id, key)
);

CREATE TABLE grants (
    app_id   INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    key_name TEXT NOT NULL REFERENCES keys(name) ON DELETE CASCADE,
    PRIMARY KEY (app_id, key_name)
);
