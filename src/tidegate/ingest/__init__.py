"""Ingestion: HTTP batches, Kafka topics (JSON and Debezium), PostgreSQL CDC, dropped files.

Every path checks events against the stream source's columns (`validate.py`), appends
the good ones to the event log and stores the rest, with a reason, as dead letters.
"""
