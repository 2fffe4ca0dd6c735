-- DB-GPT's registry table as DB-GPT's SQLAlchemy model creates it on SQLite
-- (defaults are applied by the writer, so roster sets every column on insert).
CREATE TABLE IF NOT EXISTS dbgpt_cluster_registry_instance (
  id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  model_name VARCHAR(128) NOT NULL,
  host VARCHAR(128) NOT NULL,
  port INTEGER NOT NULL,
  weight FLOAT DEFAULT 1.0,
  check_healthy BOOLEAN DEFAULT 1,
  healthy BOOLEAN DEFAULT 0,
  enabled BOOLEAN DEFAULT 1,
  prompt_template VARCHAR(128),
  last_heartbeat DATETIME,
  user_name VARCHAR(128),
  sys_code VARCHAR(128),
  gmt_created DATETIME DEFAULT CURRENT_TIMESTAMP,
  gmt_modified DATETIME DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT uk_model_instance UNIQUE (model_name, host, port, sys_code)
);
