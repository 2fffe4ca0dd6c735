-- roster's additions. Every column has a default, so DB-GPT's code, which
-- does not know them, keeps working on the same table. One ALTER statement:
-- MySQL applies it whole or not at all.
--   roster_lease_ms         heartbeat lease the worker declared (3 x its
--                           interval); 0 = the controller's default
--   roster_weight_override  weight set by an operator; survives re-registration
--   roster_in_flight, roster_queue_length, roster_capacity
--                           the load report of the last heartbeat
--   roster_updated_ms       database time (epoch ms) of the last change that
--                           matters for routing; controllers poll it
ALTER TABLE `dbgpt_cluster_registry_instance`
  ADD COLUMN `roster_lease_ms` int NOT NULL DEFAULT 0 COMMENT 'roster: declared heartbeat lease (ms), 0 = controller default',
  ADD COLUMN `roster_weight_override` double DEFAULT NULL COMMENT 'roster: weight set by an operator',
  ADD COLUMN `roster_in_flight` int NOT NULL DEFAULT 0 COMMENT 'roster: requests in flight at the last heartbeat',
  ADD COLUMN `roster_queue_length` int NOT NULL DEFAULT 0 COMMENT 'roster: queued requests at the last heartbeat',
  ADD COLUMN `roster_capacity` int NOT NULL DEFAULT 0 COMMENT 'roster: concurrent requests the instance accepts',
  ADD COLUMN `roster_updated_ms` bigint NOT NULL DEFAULT 0 COMMENT 'roster: database time of the last routing change (epoch ms)',
  ADD KEY `idx_roster_updated` (`roster_updated_ms`);
