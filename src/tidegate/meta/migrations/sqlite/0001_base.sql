-- The schema before versioned migrations (every table IF NOT EXISTS): a metadata file
-- written by an older tidegate opens unchanged and is stamped version 1.

-- runs and product versions
CREATE TABLE IF NOT EXISTS runs (
  run_id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL, target TEXT NOT NULL,
  started_at REAL NOT NULL, finished_at REAL, status TEXT NOT NULL,
  stats TEXT NOT NULL DEFAULT '{}', error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS product_versions (
  product TEXT NOT NULL, version INTEGER NOT NULL, table_name TEXT NOT NULL,
  rows INTEGER NOT NULL, built_at REAL NOT NULL, status TEXT NOT NULL,
  PRIMARY KEY (product, version)
);
CREATE TABLE IF NOT EXISTS live_versions (
  product TEXT PRIMARY KEY, version INTEGER NOT NULL
);

-- consent ledger, audit log, API keys
CREATE TABLE IF NOT EXISTS consent_ledger (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  subject TEXT NOT NULL, purpose TEXT NOT NULL, action TEXT NOT NULL,
  occurred_at REAL NOT NULL, source TEXT NOT NULL, evidence TEXT NOT NULL,
  expires_at REAL, recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS consent_by_subject ON consent_ledger (subject, seq);
CREATE INDEX IF NOT EXISTS consent_by_purpose ON consent_ledger (purpose, seq);
CREATE TABLE IF NOT EXISTS audit_log (
  seq INTEGER PRIMARY KEY, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
  key_id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, principal TEXT NOT NULL,
  roles TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL
);

-- sync runs: state segments, the in-flight batch, targets, row errors, suppressions
CREATE TABLE IF NOT EXISTS sync_state_segments (
  sync TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, fresh INTEGER NOT NULL,
  rows INTEGER NOT NULL, body BLOB NOT NULL,
  PRIMARY KEY (sync, seq)
);
CREATE TABLE IF NOT EXISTS sync_inflight_batches (
  sync TEXT PRIMARY KEY, rows INTEGER NOT NULL, body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_targets (
  sync TEXT PRIMARY KEY, destination TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_row_errors (
  sync TEXT NOT NULL, key TEXT NOT NULL, subject TEXT, row_hash TEXT NOT NULL,
  message TEXT NOT NULL, first_at REAL NOT NULL, last_at REAL NOT NULL,
  attempts INTEGER NOT NULL, dismissed_at REAL,
  PRIMARY KEY (sync, key)
);
CREATE TABLE IF NOT EXISTS sync_suppressions (
  sync TEXT NOT NULL, key TEXT NOT NULL, subject TEXT, at REAL NOT NULL,
  PRIMARY KEY (sync, key)
);

-- erasure tombstones
CREATE TABLE IF NOT EXISTS erased_subjects (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  subject_hash TEXT NOT NULL UNIQUE, erased_at REAL NOT NULL, request_id TEXT NOT NULL
);

-- freshness ledger (was products/freshness.py)
CREATE TABLE IF NOT EXISTS product_freshness (
  product TEXT PRIMARY KEY, mode TEXT NOT NULL,
  last_update REAL, last_lag REAL, max_lag REAL NOT NULL DEFAULT 0,
  updates INTEGER NOT NULL DEFAULT 0, breaches INTEGER NOT NULL DEFAULT 0,
  stale_since REAL
);

-- dead letters (was ingest/deadletters.py)
CREATE TABLE IF NOT EXISTS dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  source TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB, key BLOB,
  at REAL NOT NULL, via TEXT NOT NULL,
  topic TEXT, partition INTEGER, offset INTEGER,
  replayed_at REAL,
  UNIQUE (topic, partition, offset)
);
CREATE INDEX IF NOT EXISTS dead_letters_by_source ON dead_letters (source, id);

-- CDC positions (was ingest/postgres_cdc.py)
CREATE TABLE IF NOT EXISTS cdc_slots (slot TEXT PRIMARY KEY, snapshot_at REAL);

-- observations, quality results, alert deduplication (was observe/timeseries.py)
CREATE TABLE IF NOT EXISTS obs_points (
  product TEXT NOT NULL, version INTEGER, at REAL NOT NULL, kind TEXT NOT NULL,
  status TEXT NOT NULL, metric TEXT NOT NULL, col TEXT NOT NULL DEFAULT '', value REAL
);
CREATE INDEX IF NOT EXISTS obs_points_series ON obs_points (product, metric, col, at);
CREATE TABLE IF NOT EXISTS obs_schemas (
  product TEXT NOT NULL, version INTEGER, at REAL NOT NULL, status TEXT NOT NULL,
  fingerprint TEXT NOT NULL, columns TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS obs_schemas_by_product ON obs_schemas (product, at);
CREATE TABLE IF NOT EXISTS obs_quality (
  product TEXT NOT NULL, version INTEGER NOT NULL, at REAL NOT NULL, check_name TEXT NOT NULL,
  check_type TEXT NOT NULL, severity TEXT NOT NULL, col TEXT NOT NULL DEFAULT '',
  passed INTEGER NOT NULL, failing_rows INTEGER, observed REAL, expected TEXT NOT NULL,
  table_name TEXT, error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS obs_quality_by_product ON obs_quality (product, version);
CREATE TABLE IF NOT EXISTS obs_alerts (
  key TEXT PRIMARY KEY, last_sent REAL NOT NULL, count INTEGER NOT NULL DEFAULT 1
);
