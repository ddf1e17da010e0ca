-- Every subject an audit record carried (a sync's, export's or read's whole set: the
-- record's body names at most a sample), so `audit search --subject` and access packages
-- find each record that sent a person, at any size.
CREATE TABLE audit_subjects (
  subject_key TEXT NOT NULL,
  subject_type TEXT NOT NULL DEFAULT '',
  record_seq BIGINT NOT NULL,
  PRIMARY KEY (subject_key, subject_type, record_seq)
);
