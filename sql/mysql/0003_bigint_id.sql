-- Every INSERT ... ON DUPLICATE KEY UPDATE takes a value from the
-- AUTO_INCREMENT counter, even when it updates an existing row. With DB-GPT's
-- int(11) id, heartbeats would exhaust 2^31 values (about four months at
-- 1,000 instances beating every 5 s, a day at benchmark rates) and every write
-- would then fail. BIGINT lasts for good. DB-GPT reads id as a Python int,
-- so the wider column is invisible to it.
ALTER TABLE `dbgpt_cluster_registry_instance`
  MODIFY COLUMN `id` bigint NOT NULL AUTO_INCREMENT COMMENT 'Auto increment id';
