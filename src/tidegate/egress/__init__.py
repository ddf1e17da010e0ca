"""Every path out of tidegate: serving, syncs. Each goes through the guard and the audit."""
