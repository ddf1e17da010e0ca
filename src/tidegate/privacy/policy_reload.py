"""Policies reload live: an edit of `policies/` applies to a running process, atomically.

A running `serve`, `run` or `worker` polls the policy files (their names, sizes and
mtimes, once a second; `watchfiles` is not a dependency, and a poll costs a few `stat`s)
and `tidegate reload` asks the runtime to look at once (forwarded over the admin socket).
Either way `PolicyReloader.reload`:

1. reads and validates every policy file as `load_project` would, against the project in
   memory (`project/policies.py`): a broken edit is **refused** with its problems (logged,
   audited once per content, and raised to `tidegate reload`, which exits 2), and the old
   policy stays in force;
2. swaps `project.policy` in one assignment, so each request sees the old policy or the
   new one, never a mix. Everything that decides access reads `project.policy` per
   request (guard, roles of keys and JWTs, ingest, consent, requests, rate limits); the
   serving plan cache and the rate limiter notice the new object and drop what they
   derived from the old one;
3. writes a `policy_reload` audit record with the digest of the old and new policy files.

Each serving replica has its own reloader and polls, so every replica switches within
about a second of the edit, each with its own audit record.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tidegate.audit.log import AuditRecord
from tidegate.errors import ConfigError, Problem
from tidegate.project.policies import policy_digest, policy_signature, read_policy

if TYPE_CHECKING:
    from tidegate.platform import Platform

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
POLL_ENV = "TIDEGATE_POLICY_POLL"


def _poll_seconds() -> float:
    try:
        return max(0.05, float(os.environ.get(POLL_ENV, "") or POLL_SECONDS))
    except ValueError:
        return POLL_SECONDS


@dataclass
class ReloadResult:
    changed: bool
    digest: str  # the policy in force afterwards
    previous: str
    roles: list[str] = field(default_factory=list)
    purposes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "changed": self.changed,
            "digest": self.digest,
            "previous": self.previous,
            "roles": self.roles,
            "purposes": self.purposes,
        }


class PolicyReloader:
    """One per platform (`reloader_of`): reloads on demand and, once started, by polling."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._lock = threading.Lock()
        self._refused: str | None = None  # digest of the last broken content (said once)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        root = platform.project.root
        self._signature = policy_signature(root)
        if not platform.project.policy.digest:  # a project made by hand, not by the loader
            platform.project.policy.digest = policy_digest(root)

    # ------------------------------------------------------------ reload

    def reload(self, principal: str = "runtime", trigger: str = "command") -> ReloadResult:
        """Apply the policy files if they changed; raise ConfigError (old policy kept) if
        they are broken."""
        project = self.platform.project
        with self._lock:
            self._signature = policy_signature(project.root)
            current = project.policy
            digest = policy_digest(project.root)
            if digest == current.digest:
                self._refused = None
                return self._result(False, current.digest)
            try:
                policy = read_policy(project)
            except ConfigError as err:
                self._refuse(digest, err.problems, principal, trigger)
                raise
            self._refused = None
            project.policy = policy  # the switch: one assignment
            log.info(
                "policies reloaded (%s): %s -> %s", trigger, current.digest[:19], policy.digest[:19]
            )
            self._audit(
                AuditRecord(
                    action="policy_reload",
                    principal=principal,
                    detail={
                        "digest": policy.digest,
                        "previous": current.digest,
                        "trigger": trigger,
                        "pid": os.getpid(),
                        "roles": sorted(policy.roles),
                        "purposes": sorted(policy.purposes),
                    },
                )
            )
            return self._result(True, current.digest)

    def _result(self, changed: bool, previous: str) -> ReloadResult:
        policy = self.platform.project.policy
        return ReloadResult(
            changed=changed,
            digest=policy.digest,
            previous=previous,
            roles=sorted(policy.roles),
            purposes=sorted(policy.purposes),
        )

    def _refuse(self, digest: str, problems: list[Problem], principal: str, trigger: str) -> None:
        if digest == self._refused:
            return  # already said (the poll sees the same broken files every second)
        self._refused = digest
        in_force = self.platform.project.policy.digest
        log.error(
            "policies not reloaded: %d problem(s); the policy in force (%s) stays:\n%s",
            len(problems),
            in_force[:19],
            "\n".join(str(p) for p in problems),
        )
        self._audit(
            AuditRecord(
                action="policy_reload",
                principal=principal,
                outcome="refused",
                detail={
                    "digest": digest,
                    "in_force": in_force,
                    "trigger": trigger,
                    "pid": os.getpid(),
                    "problems": [str(p) for p in problems[:20]],
                },
            )
        )

    def _audit(self, record: AuditRecord) -> None:
        try:
            self.platform.audit.append(record)
        except Exception as err:  # the switch happened; say that it is not on record
            log.error("policy_reload: could not write the audit record: %s", err)

    # ------------------------------------------------------------ polling

    def start(self) -> None:
        """Poll the policy files in a daemon thread (once per platform; idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._poll, name="tidegate-policy-watch", daemon=True
            )
            self._thread.start()

    def _poll(self) -> None:
        interval = _poll_seconds()
        root = self.platform.project.root
        while not self._stop.wait(interval):
            if policy_signature(root) == self._signature:
                continue
            try:
                self.reload(principal="runtime", trigger="watch")
            except ConfigError:
                pass  # logged and audited by reload; the old policy stays
            except Exception:  # the watch must outlive a bad moment (a file mid-write)
                log.exception("policy watch: reload failed")

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)


def reloader_of(platform: Platform) -> PolicyReloader:
    """The platform's policy reloader (one per platform object)."""
    return platform.component(PolicyReloader)
