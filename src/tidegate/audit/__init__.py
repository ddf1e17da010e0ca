"""The hash-chained audit log that every egress and admin action writes to."""

from tidegate.audit.log import AuditLog, AuditRecord, ChainIssue

__all__ = ["AuditLog", "AuditRecord", "ChainIssue"]
