-- An index on last_heartbeat (see sql/mysql/0004_heartbeat_index.sql).
CREATE INDEX IF NOT EXISTS idx_roster_last_heartbeat ON dbgpt_cluster_registry_instance (last_heartbeat);
