"""The dead-letter store: every event tidegate could not take, with the reason why.

It is a part of the metadata store (`meta.dead_letters`, see `meta/parts.py`). An
event read from the log is dead-lettered under its (topic, partition, offset), so a
worker that dies after writing dead letters and before committing its offsets does not
write them twice. `intake.replay` checks stored events again (after the contract or the
producer was fixed) and appends those that now pass to the source's topic.
"""

from __future__ import annotations

from tidegate.meta.parts import DeadLetter, DeadLetterStore

__all__ = ["DeadLetter", "DeadLetterStore"]
