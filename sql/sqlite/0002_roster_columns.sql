-- roster's additions (see sql/mysql/0002_roster_columns.sql for meanings).
-- SQLite adds one column per statement; the migration runs in one
-- transaction, so it applies whole or not at all.
ALTER TABLE dbgpt_cluster_registry_instance ADD COLUMN roster_lease_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dbgpt_cluster_registry_instance ADD COLUMN roster_weight_override REAL DEFAULT NULL;
ALTER TABLE dbgpt_cluster_registry_instance ADD COLUMN roster_in_flight INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dbgpt_cluster_registry_instance ADD COLUMN roster_queue_length INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dbgpt_cluster_registry_instance ADD COLUMN roster_capacity INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dbgpt_cluster_registry_instance ADD COLUMN roster_updated_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS idx_roster_updated ON dbgpt_cluster_registry_instance (roster_updated_ms);
