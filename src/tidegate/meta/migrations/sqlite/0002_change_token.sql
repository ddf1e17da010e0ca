-- A counter bumped in the same transaction as every consent or API-key write (never by
-- audit appends): what the serving process's caches watch (`change_token()`).
CREATE TABLE meta_heads (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta_heads VALUES ('change_token', 0);
