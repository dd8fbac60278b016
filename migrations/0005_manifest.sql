-- What a release runs, from its commit: Procfile process types, app.json health check,
-- predeploy and postdeploy scripts and formation (JSON; empty: the image CMD is web).
ALTER TABLE releases ADD COLUMN manifest TEXT NOT NULL DEFAULT '{}';
