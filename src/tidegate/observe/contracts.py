"""Product contracts as Open Data Contract Standard v3, and breaking-change diffs.

`export_contract` writes a product's contract as ODCS v3.1.0: the schema (logical and
physical types, required, primary key, classification), quality (ODCS library metrics
where one fits, SQL otherwise; the exact tidegate check kept in a custom property so
an import gives it back), and SLA properties, `latency` among them (the product's
freshness, which ODCS prefers and datacontract-cli ignores). `import_contract` reads
one back into product YAML.

`diff` classifies every change between two versions of a contract:

| change | breaking? |
| --- | --- |
| column removed, or renamed (one removed and one added with the same type) | yes |
| type narrowed (BIGINT -> INTEGER, VARCHAR(50) -> VARCHAR(20)) or of another family | yes |
| type widened within its family | no |
| column became nullable | yes |
| classification tightened (some purpose's treatment gets stricter) | yes |
| classification weakened (some purpose's treatment gets looser) or removed (`none`) | yes |
| classification changed without any purpose's treatment moving (judged by the policy) | no |
| purpose removed | yes |
| key or subject changed (a stricter or different key) | yes |
| freshness loosened | yes |
| an `error` check removed | yes |
| column, purpose or check added; description, tags, owner changed | no |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tidegate.project.models import NOT_PERSONAL, ProductConfig, parse_duration
from tidegate.project.observe_config import product_checks
from tidegate.project.project import Policy

API_VERSION = "v3.1.0"
CHECK_PROPERTY = "tidegateCheck"
STRICTNESS = {"clear": 0, "generalize": 1, "mask": 2, "hash": 3, "drop": 4}
INTEGER_WIDTH = {"TINYINT": 1, "SMALLINT": 2, "INTEGER": 3, "BIGINT": 4, "HUGEINT": 5}
FLOAT_WIDTH = {"FLOAT": 1, "REAL": 1, "DOUBLE": 2}
DIMENSIONS = {
    "not_null": "completeness",
    "unique": "uniqueness",
    "accepted_values": "conformity",
    "regex": "conformity",
    "range": "conformity",
    "length": "conformity",
    "row_count": "completeness",
    "freshness": "timeliness",
    "relationship": "consistency",
    "distribution": "accuracy",
    "sql": "accuracy",
}


def logical_type(sql_type: str) -> str:
    upper = sql_type.upper()
    if upper in INTEGER_WIDTH or upper.startswith(("UINTEGER", "UBIGINT")):
        return "integer"
    if upper in FLOAT_WIDTH or upper.startswith(("DECIMAL", "NUMERIC")):
        return "number"
    if upper == "BOOLEAN":
        return "boolean"
    if upper == "DATE":
        return "date"
    if upper.startswith("TIMESTAMP"):
        return "timestamp"
    if upper == "TIME":
        return "time"
    if upper.endswith("[]") or upper.startswith("LIST"):
        return "array"
    if upper.startswith(("STRUCT", "MAP")) or upper == "JSON":
        return "object"
    return "string"


def _latency(freshness: str) -> tuple[float, str]:
    seconds = parse_duration(freshness).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return seconds / size, unit
    return seconds, "s"


def _quality(check: Any, product: str) -> dict[str, Any]:
    body = check.model_dump(exclude_defaults=True)
    body["type"] = check.type
    item: dict[str, Any] = {
        "name": check.check_name,
        "dimension": DIMENSIONS[check.type],
        "severity": "error" if check.severity == "error" else "warning",
        "customProperties": [{"property": CHECK_PROPERTY, "value": body}],
    }
    if check.description:
        item["description"] = check.description
    if check.type == "not_null":
        item |= {"type": "library", "metric": "nullValues", "mustBe": 0}
    elif check.type == "unique":
        item |= {"type": "library", "metric": "duplicateValues", "mustBe": 0}
        if len(check.columns) > 1:
            item["arguments"] = {"properties": list(check.columns)}
    elif check.type == "accepted_values":
        item |= {
            "type": "library",
            "metric": "invalidValues",
            "arguments": {"validValues": list(check.values)},
            "mustBe": 0,
        }
    elif check.type == "regex":
        item |= {
            "type": "library",
            "metric": "invalidValues",
            "arguments": {"pattern": check.pattern},
            "mustBe": 0,
        }
    elif check.type == "row_count":
        item |= {"type": "library", "metric": "rowCount"}
        item |= _bounds(check.min, check.max)
    elif check.type == "sql":
        item |= {"type": "sql", "query": check.sql, "mustBe": 0}
    else:
        from sqlglot import exp

        from tidegate.observe.quality import (
            AGGREGATE,
            aggregate_query,
            failing_rows_query,
        )

        target = exp.table_(product, db="products")
        if isinstance(check, AGGREGATE):
            query, low, high = aggregate_query(check, target)
            item |= {"type": "sql", "query": query.sql(dialect="duckdb")} | _bounds(low, high)
        else:
            failing = failing_rows_query(check, target, None, product)
            item |= {
                "type": "sql",
                "query": f"SELECT count(*) FROM ({failing.sql(dialect='duckdb')})",
                "mustBe": 0,
            }
    return item


def _bounds(low: float | None, high: float | None) -> dict[str, Any]:
    if low is not None and high is not None:
        return {"mustBeBetween": [low, high]}
    if low is not None:
        return {"mustBeGreaterOrEqualTo": low}
    return {"mustBeLessOrEqualTo": high}


def export_contract(
    config: ProductConfig, project_name: str, sql: str | None = None
) -> dict[str, Any]:
    """The product's contract as an ODCS v3 document (a dict ready for YAML)."""
    checks = product_checks(config)
    column_checks: dict[str, list[Any]] = {}
    table_checks: list[Any] = []
    for check in checks:
        columns = check.column_names
        if len(columns) == 1 and check.type != "sql":
            column_checks.setdefault(columns[0], []).append(check)
        else:
            table_checks.append(check)
    properties = []
    for name, spec in config.columns.items():
        prop: dict[str, Any] = {
            "name": name,
            "logicalType": logical_type(spec.type),
            "physicalType": spec.type,
            "required": not spec.nullable,
        }
        if name == config.key:
            prop |= {"primaryKey": True, "primaryKeyPosition": 1, "unique": True}
        if spec.description:
            prop["description"] = spec.description
        if spec.classification:
            prop["classification"] = spec.classification
        if name in column_checks:
            prop["quality"] = [_quality(c, config.name) for c in column_checks[name]]
        properties.append(prop)
    schema: dict[str, Any] = {
        "name": config.name,
        "physicalName": f"products.{config.name}",
        "physicalType": "view",
        "logicalType": "object",
        "properties": properties,
    }
    if config.description:
        schema["description"] = config.description
    if table_checks:
        schema["quality"] = [_quality(c, config.name) for c in table_checks]
    custom: list[dict[str, Any]] = [{"property": "purposes", "value": list(config.purposes)}]
    if config.subject:
        custom.append({"property": "subject", "value": config.subject})
    if sql is not None:
        custom.append({"property": "tidegateSql", "value": sql})
    document: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "DataContract",
        "id": f"{project_name}.{config.name}",
        "name": config.name,
        "version": config.version or "1.0.0",
        "status": "active",
        "domain": project_name,
        "team": {"name": config.owner},
        "schema": [schema],
        "customProperties": custom,
    }
    if config.description:
        document["description"] = {"purpose": config.description}
    if config.tags:
        document["tags"] = list(config.tags)
    if config.freshness:
        value, unit = _latency(config.freshness)
        document["slaProperties"] = [
            {
                "property": "latency",
                "value": int(value) if value == int(value) else value,
                "unit": unit,
                "element": f"{config.name}",
                "description": "rows are visible to consumers at most this long after the change",
            }
        ]
    return document


def _custom(items: list[dict[str, Any]] | None, name: str) -> Any:
    for item in items or []:
        if item.get("property") == name:
            return item.get("value")
    return None


def import_contract(document: dict[str, Any]) -> dict[str, Any]:
    """An ODCS v3 document -> the data of a product YAML file (validated)."""
    schema = (document.get("schema") or [{}])[0]
    columns: dict[str, Any] = {}
    checks: list[Any] = []
    key = None
    for prop in schema.get("properties") or []:
        spec: dict[str, Any] = {"type": prop.get("physicalType") or "VARCHAR"}
        if prop.get("description"):
            spec["description"] = prop["description"]
        if prop.get("classification"):
            spec["classification"] = prop["classification"]
        if prop.get("required"):
            spec["nullable"] = False
        if prop.get("primaryKey"):
            key = prop["name"]
        columns[prop["name"]] = spec
        for item in prop.get("quality") or []:
            body = _custom(item.get("customProperties"), CHECK_PROPERTY)
            if body is not None:
                checks.append(body)
    for item in schema.get("quality") or []:
        body = _custom(item.get("customProperties"), CHECK_PROPERTY)
        if body is not None:
            checks.append(body)
    data: dict[str, Any] = {
        "name": document.get("name") or schema.get("name"),
        "owner": (document.get("team") or {}).get("name", ""),
        "key": key,
        "purposes": _custom(document.get("customProperties"), "purposes") or [],
        "columns": columns,
        "version": str(document.get("version")),
    }
    description = (document.get("description") or {}).get("purpose")
    if description:
        data["description"] = description
    subject = _custom(document.get("customProperties"), "subject")
    if subject:
        data["subject"] = subject
    sql = _custom(document.get("customProperties"), "tidegateSql")
    data["sql"] = sql or "SELECT 1"
    for sla in document.get("slaProperties") or []:
        if sla.get("property") == "latency":
            data["freshness"] = f"{sla['value']}{sla.get('unit', 's')[0]}"
    if document.get("tags"):
        data["tags"] = list(document["tags"])
    if checks:
        data["checks"] = checks
    ProductConfig.model_validate(data)
    return data


# ---------------------------------------------------------------- diff


@dataclass(frozen=True)
class Change:
    kind: str
    subject: str
    detail: str
    breaking: bool

    def __str__(self) -> str:
        mark = "BREAKING" if self.breaking else "ok"
        return f"[{mark}] {self.kind} {self.subject}: {self.detail}"


def _type_parts(sql_type: str) -> tuple[str, list[int]]:
    match = re.match(r"^\s*([A-Z ]+?)\s*(?:\(([\d,\s]+)\))?\s*$", sql_type.upper())
    if not match:
        return sql_type.upper(), []
    args = [int(a) for a in (match.group(2) or "").split(",") if a.strip()]
    return match.group(1).strip(), args


def type_change(old: str, new: str) -> str:
    """'same', 'widened' or 'narrowed' (a change of family counts as narrowed)."""
    if old.upper() == new.upper():
        return "same"
    (old_base, old_args), (new_base, new_args) = _type_parts(old), _type_parts(new)
    for widths in (INTEGER_WIDTH, FLOAT_WIDTH):
        if old_base in widths and new_base in widths:
            return "widened" if widths[new_base] >= widths[old_base] else "narrowed"
    if old_base in INTEGER_WIDTH and new_base in (*FLOAT_WIDTH, "DECIMAL"):
        return "widened" if new_base == "DOUBLE" or new_base == "DECIMAL" else "narrowed"
    if old_base == new_base and old_args and new_args:
        if old_base == "DECIMAL":
            old_int, new_int = old_args[0] - old_args[-1], new_args[0] - new_args[-1]
            ok = new_int >= old_int and new_args[-1] >= old_args[-1]
            return "widened" if ok else "narrowed"
        return "widened" if new_args[0] >= old_args[0] else "narrowed"
    if old_base == "VARCHAR" and new_base == "VARCHAR":
        return "widened" if not new_args else "narrowed"
    return "narrowed"


def _classification_change(
    old: str | None, new: str | None, purposes: list[str], policy: Policy | None
) -> str | None:
    """How a column's classification changed: None (it did not), "tightened" (some
    purpose's treatment gets stricter), "weakened" (some purpose's treatment gets looser),
    "removed" (it no longer says it holds personal data), or "changed" (no treatment moves).

    Tightening breaks consumers (they get less); weakening and removing break the promise
    to the people in the data (more of it leaves), so both are breaking too (issue 13)."""
    if old == new:
        return None
    personal_before = old not in (None, NOT_PERSONAL)
    personal_after = new not in (None, NOT_PERSONAL)
    if policy is not None:
        before = [STRICTNESS[policy.treatment_for(p, old).treatment] for p in purposes]
        after = [STRICTNESS[policy.treatment_for(p, new).treatment] for p in purposes]
        if any(a < b for a, b in zip(after, before, strict=True)):
            return "weakened"
        if any(a > b for a, b in zip(after, before, strict=True)):
            return "tightened"
    if personal_before and not personal_after:
        return "removed"
    if policy is not None or not personal_after:
        return "changed"
    # no policy to judge by: a new category may loosen some purpose
    return "reclassified" if personal_before else "tightened"


def diff(old: ProductConfig, new: ProductConfig, policy: Policy | None = None) -> list[Change]:
    """Every difference between two versions of a product contract, classified."""
    changes: list[Change] = []
    removed = [c for c in old.columns if c not in new.columns]
    added = [c for c in new.columns if c not in old.columns]
    for column in list(removed):
        twin = next(
            (
                a
                for a in added
                if new.columns[a].type == old.columns[column].type
                and new.columns[a].classification == old.columns[column].classification
            ),
            None,
        )
        if twin is not None and len(removed) == len(added):
            changes.append(Change("column renamed", column, f"now {twin!r}", True))
            added.remove(twin)
        else:
            changes.append(Change("column removed", column, "consumers reading it break", True))
    changes += [Change("column added", c, new.columns[c].type, False) for c in added]
    for column in old.columns:
        if column not in new.columns:
            continue
        before, after = old.columns[column], new.columns[column]
        verdict = type_change(before.type, after.type)
        if verdict != "same":
            changes.append(
                Change(
                    f"type {verdict}",
                    column,
                    f"{before.type} -> {after.type}",
                    verdict != "widened",
                )
            )
        if before.nullable != after.nullable:
            loosened = after.nullable
            changes.append(
                Change(
                    "nullability",
                    column,
                    "may now be null" if loosened else "now never null",
                    loosened,
                )
            )
        how = _classification_change(
            before.classification, after.classification, list(new.purposes), policy
        )
        if how is not None:
            changes.append(
                Change(
                    f"classification {how}",
                    column,
                    f"{before.classification} -> {after.classification}",
                    how != "changed",
                )
            )
        if before.description != after.description:
            changes.append(Change("description", column, "changed", False))
    for purpose in old.purposes:
        if purpose not in new.purposes:
            changes.append(Change("purpose removed", purpose, "its consumers lose access", True))
    for purpose in new.purposes:
        if purpose not in old.purposes:
            changes.append(Change("purpose added", purpose, "", False))
    if old.key != new.key:
        changes.append(Change("key changed", new.key, f"{old.key} -> {new.key}", True))
    if old.subject != new.subject:
        changes.append(
            Change("subject changed", str(new.subject), f"{old.subject} -> {new.subject}", True)
        )
    if old.freshness != new.freshness:
        before_s = parse_duration(old.freshness).total_seconds() if old.freshness else None
        after_s = parse_duration(new.freshness).total_seconds() if new.freshness else None
        looser = after_s is None or (before_s is not None and after_s > before_s)
        changes.append(
            Change(
                "freshness loosened" if looser else "freshness tightened",
                new.name,
                f"{old.freshness} -> {new.freshness}",
                looser,
            )
        )
    old_checks = {c.check_name: c for c in product_checks(old)}
    new_checks = {c.check_name: c for c in product_checks(new)}
    for name, check in old_checks.items():
        if name not in new_checks:
            strict = check.severity == "error"
            changes.append(Change("check removed", name, f"severity {check.severity}", strict))
    for name in new_checks:
        if name not in old_checks:
            changes.append(Change("check added", name, "", False))
    if old.owner != new.owner:
        changes.append(Change("owner", new.name, f"{old.owner} -> {new.owner}", False))
    if old.description != new.description or old.tags != new.tags:
        changes.append(Change("documentation", new.name, "description or tags", False))
    return changes


def needs_version_bump(old: ProductConfig, new: ProductConfig, changes: list[Change]) -> bool:
    return any(c.breaking for c in changes) and (old.version or "") == (new.version or "")
