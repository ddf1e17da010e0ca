"""Subject types: what kind of person a source's or product's subject column identifies.

Ids are only unique within one kind of person: customer 3 and employee 3 are two people.
Policies define the kinds once (`subject_types:`, each with the columns a privacy officer
may look a person up by, e.g. `lookup: [email]`); a source or product names its kind
beside its subject column:

    subject: {column: contact_id, type: contact}

The short form `subject: customer_id` stays valid and means the project's *default*
type: the only one defined, the one marked `default: true`, or, in a project that
defines none, the implicit type `subject` (so projects written before types keep
working unchanged). With several types and no default the short form is ambiguous and
the loader says so at the line.

Access and erasure requests, tombstones, consent and audit records name the type; the
default type is written as before (same tombstone hash, same consent key), so existing
erasures and consent keep holding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tidegate.errors import BadRequestError, Problem

if TYPE_CHECKING:
    from tidegate.project.project import Product, Project, Source

#: the one type of a project that defines none
DEFAULT_SUBJECT_TYPE = "subject"

#: the JSON Schema of `subject:` in a source or product (short or long form)
SUBJECT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "description": "the subject column (the project's default type)"},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["column"],
            "properties": {
                "column": {"type": "string", "description": "the subject column"},
                "type": {
                    "type": "string",
                    "pattern": "^[a-z][a-z0-9_]*$",
                    "description": "the subject type (policies: subject_types)",
                },
            },
        },
        {"type": "null"},
    ],
    "default": None,
    "description": "column naming the data subject (person) a row is about, "
    "or {column, type} to name the kind of person (policies: subject_types)",
}


class SubjectTypeConfig(BaseModel):
    """One kind of person (`subject_types.<name>` in policies)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    lookup: list[str] = Field(
        default=[],
        description="columns a request may find this kind of person by (e.g. email), in "
        "the sources and products of this type",
    )
    default: bool = Field(
        default=False, description="what a bare `subject: column` means when several types exist"
    )


def unpack_subject(data: Any) -> Any:
    """`subject: {column, type}` as the fields `subject` (the column) and `subject_type`;
    the short form passes through. A malformed long form is a FieldError at `subject`."""
    from tidegate.project.models import FieldError

    if not isinstance(data, dict) or not isinstance(data.get("subject"), dict):
        return data
    long = data["subject"]
    unknown = sorted(set(long) - {"column", "type"})
    if unknown or not isinstance(long.get("column"), str):
        raise FieldError(
            "subject",
            "subject is a column name or {column: NAME, type: SUBJECT_TYPE}"
            + (f" (unknown key {unknown[0]!r})" if unknown else " (column is missing)"),
        )
    if "subject_type" in data and long.get("type") not in (None, data["subject_type"]):
        raise FieldError("subject", "subject.type and subject_type disagree")
    unpacked = {**data, "subject": long["column"]}
    if long.get("type") is not None:
        unpacked["subject_type"] = long["type"]
    return unpacked


def subject_types(project: Project) -> dict[str, SubjectTypeConfig]:
    """The project's subject types: those its policies define, or the implicit one."""
    declared = project.policy.subject_types
    return dict(declared) if declared else {DEFAULT_SUBJECT_TYPE: SubjectTypeConfig()}


def default_subject_type(project: Project) -> str | None:
    """The type a bare `subject: column` and an untyped request mean (None: ambiguous)."""
    types = subject_types(project)
    if len(types) == 1:
        return next(iter(types))
    marked = [name for name, spec in types.items() if spec.default]
    return marked[0] if len(marked) == 1 else None


def _entries(project: Project) -> list[Source | Product]:
    return [*project.sources.values(), *project.products.values()]


def consent_subject_type(project: Project) -> str | None:
    """The subject type whose choices the consent ledger holds: it is keyed by id alone,
    so it holds one kind of person's, the default type's. None: several types and no
    default, so no type's rows may rely on a recorded choice (mark one `default: true`)."""
    return default_subject_type(project)


def resolve_subject_types(project: Project) -> list[Problem]:
    """Give every source and product with a subject column its subject type; each
    unknown or ambiguous type is a problem at the entry's `subject` line."""
    types = subject_types(project)
    default = default_subject_type(project)
    problems: list[Problem] = []
    marked = [n for n, s in project.policy.subject_types.items() if s.default]
    if len(marked) > 1:
        doc, base = project.policy.origins[("subject_type", marked[1])]
        problems.append(
            doc.problem(
                (*base, "default"),
                f"only one subject type may be the default ({', '.join(marked)} are)",
            )
        )
    for entry in _entries(project):
        column = entry.config.subject
        if column is None:
            continue
        named = entry.config.subject_type
        if named is None and default is None:
            problems.append(
                entry.doc.problem(
                    ("subject",),
                    f"which kind of person is {column!r}? the project defines subject types "
                    f"{', '.join(sorted(types))} and none is the default: write "
                    f"subject: {{column: {column}, type: TYPE}}",
                )
            )
            continue
        if named is not None and named not in types:
            problems.append(
                entry.doc.problem(
                    ("subject",),
                    f"unknown subject type {named!r} (policies define: "
                    f"{', '.join(sorted(project.policy.subject_types)) or 'none'}; add it "
                    "under subject_types in a policies file)",
                )
            )
            continue
        entry.subject_type = named or default
    return problems


def check_lookups(project: Project) -> list[Problem]:
    """Each lookup column is a column of some source or product of its type."""
    problems: list[Problem] = []
    for name, spec in project.policy.subject_types.items():
        held = {
            column
            for entry in _entries(project)
            if entry.subject_type == name
            for column in entry.config.columns
        }
        for index, column in enumerate(spec.lookup):
            if column not in held:
                doc, base = project.policy.origins[("subject_type", name)]
                problems.append(
                    doc.problem(
                        (*base, "lookup", index),
                        f"lookup column {column!r} is in no source or product whose "
                        f"subjects are of type {name!r}",
                    )
                )
    return problems


def request_type(project: Project, given: str | None) -> str:
    """The subject type a request means: `given`, checked, or the default type; a
    BadRequestError naming the types when the project has several and none was given."""
    types = subject_types(project)
    if given is None:
        default = default_subject_type(project)
        if default is None:
            raise BadRequestError(
                "this project has several subject types: name one (--type, or ?type= "
                f"over HTTP): {', '.join(sorted(types))}"
            )
        return default
    if given not in types:
        raise BadRequestError(
            f"unknown subject type {given!r}: this project has {', '.join(sorted(types))}"
        )
    return given


def lookup_columns(project: Project, subject_type: str) -> list[str]:
    return list(subject_types(project)[subject_type].lookup)
