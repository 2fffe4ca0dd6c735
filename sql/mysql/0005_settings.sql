-- Cluster-wide settings as data (docs/settings.md): API keys (hashed),
-- model aliases, per-model and cluster settings. One row per setting, its
-- value a JSON document the controllers validate; every change bumps the
-- one version row in the same transaction (a compare-and-set on it orders
-- writers), and controllers poll that version. New tables only: DB-GPT's
-- instance table is untouched.
CREATE TABLE IF NOT EXISTS `roster_settings` (
  `kind` varchar(16) NOT NULL COMMENT 'key, alias, model or cluster',
  `name` varchar(128) NOT NULL,
  `value` text NOT NULL COMMENT 'JSON',
  `updated_ms` bigint NOT NULL,
  PRIMARY KEY (`kind`, `name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='roster cluster settings';
CREATE TABLE IF NOT EXISTS `roster_settings_version` (
  `id` tinyint NOT NULL,
  `version` bigint NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB COMMENT='roster settings version (one row)';
INSERT IGNORE INTO `roster_settings_version` (`id`, `version`) VALUES (1, 0);
