-- Where the audit anchor (audit/anchor.py: the signed last (seq, hash)) can be kept when
-- several machines share the metadata: one row, moved by compare-and-set.
CREATE TABLE audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), body TEXT NOT NULL);
