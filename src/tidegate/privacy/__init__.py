"""Purposes, consent, treatments and the guard every egress goes through."""

from tidegate.privacy.consent import ConsentEvent, ConsentLedger, ConsentView, RowFilter
from tidegate.privacy.guard import AccessContext, AccessPlan, ColumnPlan, Guard

__all__ = [
    "AccessContext",
    "AccessPlan",
    "ColumnPlan",
    "ConsentEvent",
    "ConsentLedger",
    "ConsentView",
    "Guard",
    "RowFilter",
]
