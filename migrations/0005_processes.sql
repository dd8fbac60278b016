-- The process types of a release (Procfile: name -> command; empty: the image's CMD is web).
ALTER TABLE releases ADD COLUMN processes TEXT NOT NULL DEFAULT '{}';
