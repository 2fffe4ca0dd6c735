-- Per-minute usage counters of API keys (see sql/mysql/0006_key_usage.sql).
CREATE TABLE IF NOT EXISTS roster_key_usage (
  name TEXT NOT NULL,
  win INTEGER NOT NULL,
  requests INTEGER NOT NULL DEFAULT 0,
  tokens INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (name, win)
);
