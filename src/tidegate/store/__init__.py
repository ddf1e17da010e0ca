"""Stores: the analytical warehouse (DuckDB) and the online store that serving reads."""
