"""The product page's quality panel: check history over versions, and one check's
failing rows read through the guard.

A failing row is a row of the product (the builder copies up to
`observe.failing_rows_kept` of them to `quality."<product>__v<N>__<check>"`), so it holds
the same personal data as the product. The console therefore shows it the way the API
would serve it: only under a purpose the viewer's roles may declare on the product
(`Guard.plan` decides, as for `/v1/products/...`), with each column treated for that
purpose, subjects without a legal basis filtered out, and a `serve` audit record naming
the purpose, the treatments and the subjects shown (a refusal is audited too).
"""

from __future__ import annotations

from typing import Any

from tidegate.api.console.core import Page
from tidegate.audit.log import AuditRecord
from tidegate.egress.serve.service import Call
from tidegate.errors import NotFoundError, TidegateError

HISTORY_VERSIONS = 12
MAX_FAILING_SHOWN = 50


def history(page: Page, name: str, versions: list[int]) -> list[dict[str, Any]]:
    """Check results of the newest `HISTORY_VERSIONS` versions checked, newest first."""
    store = page.console.platform.meta.observations
    rows = []
    for version in sorted(versions, reverse=True)[:HISTORY_VERSIONS]:
        checks = store.quality(name, version)
        if not checks:
            continue
        failed = [c for c in checks if not c.get("passed")]
        rows.append(
            {
                "version": version,
                "at": max(float(c["at"]) for c in checks),
                "passed": len(checks) - len(failed),
                "failed": len(failed),
                "checks": {c["check_name"]: c for c in checks},
            }
        )
    return rows


def failing_rows(
    page: Page, name: str, purpose: str, check: str, version_text: str
) -> dict[str, Any] | None:
    """One check's kept failing rows, treated by the guard for `purpose`; audited."""
    from tidegate.observe.quality import QUALITY, quality_table
    from tidegate.privacy.guard import AccessContext, guard_of

    if not check:
        return None
    platform = page.console.platform
    store = platform.meta.observations
    version = int(version_text) if version_text.isdigit() else None
    results = store.quality(name, version)
    found = next((r for r in results if r["check_name"] == check), None)
    if found is None:
        raise NotFoundError(f"no check {check[:60]!r} on {name!r} at that version")
    expected = f'{QUALITY}."{quality_table(name, int(found["version"]), check)}"'
    call = Call(action="serve", product=name, purpose=purpose or None, principal=page.principal)
    call.detail.update(via="console", page="failing_rows", check=check)
    context = AccessContext(page.principal.name, page.roles, purpose)
    try:
        plan = guard_of(platform).plan(context, name)
    except TidegateError as err:
        page.console.serving.audit_denied(call, err)
        raise
    base = {
        "check": check,
        "version": found["version"],
        "purpose": plan.purpose,
        "failing": found["failing_rows"],
        "treatments": plan.treatments(),
        "columns": [c.name for c in plan.visible_columns],
    }
    if found["table_name"] != expected:
        return {**base, "rows": [], "kept": 0, "note": "this check kept no failing rows"}
    try:
        raw = platform.warehouse.arrow(
            f"SELECT * FROM {expected} LIMIT {MAX_FAILING_SHOWN}"
        ).to_pylist()
    except Exception:  # pruned with its version (observe.quality_tables_kept)
        return {**base, "rows": [], "kept": 0, "note": "its failing rows were pruned"}
    shown: list[dict[str, Any]] = []
    subjects: dict[str, None] = {}
    for row in raw:
        treated = plan.apply_row(row)
        if treated is None:
            continue  # no legal basis for this purpose: not shown, as in an API read
        shown.append(treated)
        value = row.get(plan.subject_column) if plan.subject_column else None
        if value is not None:
            subjects[str(value)] = None
    platform.audit_writer.submit(
        AuditRecord(
            action="serve",
            principal=page.principal.name,
            purpose=plan.purpose,
            product=name,
            columns=plan.treatments() if shown else {},
            rows=len(shown),
            subjects=tuple(subjects),
            subject_type=plan.subject_type,
            outcome="allowed" if shown else "absent",
            detail={
                "via": "console",
                "page": "failing_rows",
                "check": check,
                "version": found["version"],
                "key_id": page.principal.key_id,
                "filtered": len(raw) - len(shown),
            },
        )
    )
    return {**base, "rows": shown, "kept": len(raw), "note": ""}
