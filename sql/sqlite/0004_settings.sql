-- Cluster-wide settings (see sql/mysql/0005_settings.sql).
CREATE TABLE IF NOT EXISTS roster_settings (
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  updated_ms INTEGER NOT NULL,
  PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS roster_settings_version (
  id INTEGER PRIMARY KEY,
  version INTEGER NOT NULL
);
INSERT OR IGNORE INTO roster_settings_version (id, version) VALUES (1, 0);
