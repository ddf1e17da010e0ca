-- What the CDC capture last saw of each replication slot (ingest/postgres_cdc.py): its
-- confirmed position, how far behind it is in bytes and seconds, and the error that
-- stopped it, so `tidegate status` and /metrics show it from any process.
CREATE TABLE cdc_slot_state (
  slot TEXT PRIMARY KEY, source TEXT NOT NULL, confirmed_lsn TEXT, lag_bytes BIGINT,
  lag_seconds DOUBLE PRECISION, error TEXT, at DOUBLE PRECISION NOT NULL
);
-- SLO compliance history (observe/slo.py): each sample says whether a product was within
-- its freshness SLO and how many seconds the sample covers.
CREATE TABLE slo_samples (
  product TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, seconds DOUBLE PRECISION NOT NULL,
  within BOOLEAN NOT NULL
);
CREATE INDEX slo_samples_by_product ON slo_samples (product, at);
