-- The shared counters behind API keys' per-minute limits (docs/settings.md):
-- one row per key and minute window, the requests and tokens handed out as
-- leases to apiservers (through the controllers) in that window. Rows of
-- windows past are deleted by the controllers.
CREATE TABLE IF NOT EXISTS `roster_key_usage` (
  `name` varchar(128) NOT NULL COMMENT 'the key''s name',
  `win` bigint NOT NULL COMMENT 'epoch minute',
  `requests` bigint NOT NULL DEFAULT 0,
  `tokens` bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (`name`, `win`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='roster API key usage per minute';
