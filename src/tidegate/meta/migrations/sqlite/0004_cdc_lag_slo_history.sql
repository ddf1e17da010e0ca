-- What the CDC capture last saw of each replication slot (ingest/postgres_cdc.py): its
-- confirmed position, how far behind it is in bytes and seconds, and the error that
-- stopped it, so `tidegate status` and /metrics show it from any process.
CREATE TABLE IF NOT EXISTS cdc_slot_state (
  slot TEXT PRIMARY KEY, source TEXT NOT NULL, confirmed_lsn TEXT, lag_bytes INTEGER,
  lag_seconds REAL, error TEXT, at REAL NOT NULL
);
-- SLO compliance history (observe/slo.py): each sample says whether a product was within
-- its freshness SLO and how many seconds the sample covers.
CREATE TABLE IF NOT EXISTS slo_samples (
  product TEXT NOT NULL, at REAL NOT NULL, seconds REAL NOT NULL, within INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS slo_samples_by_product ON slo_samples (product, at);
