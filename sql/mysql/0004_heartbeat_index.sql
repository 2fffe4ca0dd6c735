-- An index on last_heartbeat, so that a controller's poll reads only the rows
-- heartbeated since its last poll (a heartbeat through another controller
-- shows in this one's list within --view_poll_ms). An extra index is
-- invisible to DB-GPT's code.
ALTER TABLE `dbgpt_cluster_registry_instance`
  ADD KEY `idx_roster_last_heartbeat` (`last_heartbeat`);
