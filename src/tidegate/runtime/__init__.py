"""Processes: the stream worker, the scheduler and jobs that span stages (layer 5)."""
