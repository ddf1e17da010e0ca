-- The subject lists of records that carried many subjects (a sync, an export), stored
-- as a few text parts instead of one `audit_subjects` row each: see meta/subject_sets.py.
-- Searched by substring (`instr`), renamed by an erasure with `replace`.
CREATE TABLE IF NOT EXISTS audit_subject_sets (
  record_seq INTEGER NOT NULL,
  subject_type TEXT NOT NULL DEFAULT '',
  part INTEGER NOT NULL,
  subjects TEXT NOT NULL,
  PRIMARY KEY (record_seq, subject_type, part)
);
