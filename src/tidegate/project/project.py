"""A loaded project: the validated models, plus where each came from for error messages."""

from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidegate.errors import Problem
from tidegate.project.models import (
    NOT_PERSONAL,
    ColumnSpec,
    PolicyFile,
    PostgresTableSource,
    ProductConfig,
    ProjectConfig,
    PurposeConfig,
    RoleConfig,
    StreamSource,
    SyncConfig,
    TcfPolicy,
    TreatmentSpec,
    parse_duration,
)
from tidegate.project.subjects import SubjectTypeConfig
from tidegate.project.yamlfile import LocatedDocument

#: Treatment when no rule matches a classified column: privacy-first, show nothing.
FALLBACK_TREATMENT = TreatmentSpec(treatment="drop")
#: Columns without a classification are operational data and shown as they are.
UNCLASSIFIED = "unclassified"


@dataclass
class Source:
    config: Any  # one of the SourceConfig union members
    doc: LocatedDocument
    #: the kind of person `config.subject` identifies (set by the loader; project/subjects.py)
    subject_type: str | None = None

    @property
    def name(self) -> str:
        return str(self.config.name)

    @property
    def columns(self) -> dict[str, ColumnSpec]:
        return dict(self.config.columns)


@dataclass
class Product:
    config: ProductConfig
    doc: LocatedDocument
    sql: str
    sql_path: str
    sql_first_line: int
    #: names of sources and products this product's SQL reads (filled by checks)
    depends_on: set[str] = field(default_factory=set)
    #: the kind of person `config.subject` identifies (set by the loader; project/subjects.py)
    subject_type: str | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def columns(self) -> dict[str, ColumnSpec]:
        return dict(self.config.columns)

    @property
    def subject_column(self) -> str | None:
        return self.config.subject


@dataclass
class Sync:
    config: SyncConfig
    doc: LocatedDocument

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class Policy:
    """Purposes, roles and treatments merged from every `policies/*.yml`."""

    subject_types: dict[str, SubjectTypeConfig] = field(default_factory=dict)
    purposes: dict[str, PurposeConfig] = field(default_factory=dict)
    roles: dict[str, RoleConfig] = field(default_factory=dict)
    treatments: dict[str, dict[str, TreatmentSpec]] = field(default_factory=dict)
    default_treatment: TreatmentSpec = FALLBACK_TREATMENT
    tcf: TcfPolicy = field(default_factory=TcfPolicy)
    #: `sha256:` of the policy files it was read from (`project/policies.py`)
    digest: str = ""
    #: (kind, name) -> (doc, yaml path) for error messages in cross-file checks
    origins: dict[tuple[str, str], tuple[LocatedDocument, tuple[str | int, ...]]] = field(
        default_factory=dict
    )

    @classmethod
    def merge(
        cls, files: list[tuple[PolicyFile, LocatedDocument]], problems: list[Problem]
    ) -> Policy:
        policy = cls()
        for policy_file, doc in files:
            for kind, entries, target in (
                ("subject_type", policy_file.subject_types, policy.subject_types),
                ("purpose", policy_file.purposes, policy.purposes),
                ("role", policy_file.roles, policy.roles),
            ):
                section = f"{kind}s"
                for name, value in entries.items():
                    if name in target:
                        first = policy.origins[(kind, name)][0].display
                        problems.append(
                            doc.problem(
                                (section, name), f"{kind} {name!r} is already defined in {first}"
                            )
                        )
                        continue
                    target[name] = value  # type: ignore[assignment]
                    policy.origins[(kind, name)] = (doc, (section, name))
            for purpose, rules in policy_file.treatments.items():
                merged = policy.treatments.setdefault(purpose, {})
                for classification, spec in rules.items():
                    if classification in merged:
                        where = policy.origins[("treatment", f"{purpose}/{classification}")]
                        problems.append(
                            doc.problem(
                                ("treatments", purpose, classification),
                                f"treatment for {classification!r} under {purpose!r} is "
                                f"defined twice (first in {where[0].display})",
                            )
                        )
                    merged[classification] = spec
                    policy.origins.setdefault(
                        ("treatment", f"{purpose}/{classification}"),
                        (doc, ("treatments", purpose, classification)),
                    )
                policy.origins.setdefault(("treatments", purpose), (doc, ("treatments", purpose)))
            if policy_file.tcf is not None:
                if ("tcf", "tcf") in policy.origins:
                    first = policy.origins[("tcf", "tcf")][0].display
                    problems.append(doc.problem(("tcf",), f"tcf is already set in {first}"))
                else:
                    policy.tcf = policy_file.tcf
                    policy.origins[("tcf", "tcf")] = (doc, ("tcf",))
            if policy_file.default_treatment is not None:
                # one value, set once: a second file overriding the first would make the
                # outcome depend on file order (issue 13)
                earlier = policy.origins.get(("default_treatment", "default_treatment"))
                if earlier is not None and (
                    policy.default_treatment.treatment != policy_file.default_treatment
                ):
                    problems.append(
                        doc.problem(
                            ("default_treatment",),
                            f"default_treatment {policy_file.default_treatment!r} conflicts "
                            f"with {policy.default_treatment.treatment!r} set in "
                            f"{earlier[0].display}; set it in one policy file",
                        )
                    )
                    continue
                policy.default_treatment = TreatmentSpec(treatment=policy_file.default_treatment)
                policy.origins.setdefault(
                    ("default_treatment", "default_treatment"), (doc, ("default_treatment",))
                )
        return policy

    def treatment_for(self, purpose: str, classification: str | None) -> TreatmentSpec:
        """Longest classification prefix wins; the purpose's own rules beat the `*` rules.

        `none` (declared non-personal) is matched like an unclassified column."""
        if classification == NOT_PERSONAL:
            classification = None
        label = classification or UNCLASSIFIED
        for scope in (purpose, "*"):
            rules = self.treatments.get(scope, {})
            best: tuple[int, TreatmentSpec] | None = None
            for prefix, spec in rules.items():
                if (label == prefix or label.startswith(prefix + ".")) and (
                    best is None or len(prefix) > best[0]
                ):
                    best = (len(prefix), spec)
            if best is not None:
                return best[1]
        if classification is None:
            return TreatmentSpec(treatment="clear")
        return self.default_treatment

    def purposes_of_roles(self, roles: list[str] | tuple[str, ...]) -> set[str]:
        allowed: set[str] = set()
        for role in roles:
            config = self.roles.get(role)
            if config is not None:
                allowed.update(config.purposes)
        return allowed

    def roles_allow_product(self, roles: list[str] | tuple[str, ...], product: str) -> bool:
        for role in roles:
            config = self.roles.get(role)
            if config is not None and ("*" in config.products or product in config.products):
                return True
        return False


@dataclass
class Project:
    root: Path
    config: ProjectConfig
    sources: dict[str, Source] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    syncs: dict[str, Sync] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def path(self, relative: str) -> Path:
        """Resolve a path from the config relative to the project root."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else (self.root / candidate)

    def build_order(self) -> list[str]:
        """Products in dependency order (checks guarantee there is no cycle)."""
        graph = {
            name: {dep for dep in product.depends_on if dep in self.products}
            for name, product in self.products.items()
        }
        return list(graphlib.TopologicalSorter(graph).static_order())

    def downstream_of(self, names: set[str]) -> list[str]:
        """`names` and every product that reads them, in build order."""
        affected = set(names)
        order = self.build_order()
        for name in order:
            if self.products[name].depends_on & affected:
                affected.add(name)
        return [name for name in order if name in affected]

    def freshness_seconds(self, product: str) -> float:
        declared = self.products[product].config.freshness or self.config.defaults.freshness
        return parse_duration(declared).total_seconds()

    def relation_names(self) -> set[str]:
        return set(self.sources) | set(self.products)


def stream_sources(project: Project) -> dict[str, StreamSource]:
    """The sources whose rows arrive as events on a topic of the event log, by name: the
    `stream` sources, and each `postgres` source with `cdc: logical` seen as the Debezium
    stream its capture writes (so the worker, the planner and erasure treat both alike)."""
    found: dict[str, StreamSource] = {}
    for name, source in project.sources.items():
        if isinstance(source.config, StreamSource):
            found[name] = source.config
        elif isinstance(source.config, PostgresTableSource) and source.config.cdc:
            found[name] = cdc_stream(source.config)
    return found


def is_stream(config: Any) -> bool:
    """True for a source kept current from the event log (a stream or a CDC source)."""
    return isinstance(config, StreamSource) or (
        isinstance(config, PostgresTableSource) and config.cdc is not None
    )


def cdc_stream(config: PostgresTableSource) -> StreamSource:
    """The Debezium stream a CDC source's capture writes: same columns, key and subject."""
    return StreamSource(
        type="stream",
        name=config.name,
        description=config.description,
        owner=config.owner,
        key=config.key,
        subject=config.subject,
        columns=config.columns,
        topic=config.topic,
        format="debezium",
        table=config.table,
    )


def cdc_sources(project: Project) -> dict[str, PostgresTableSource]:
    """The `postgres` sources with `cdc: logical`, by name."""
    return {
        name: source.config
        for name, source in project.sources.items()
        if isinstance(source.config, PostgresTableSource) and source.config.cdc is not None
    }


def cdc_slot(project: Project, config: PostgresTableSource) -> str:
    """The replication slot of a CDC source: its `slot`, else tidegate_<project>_<source>
    (lower case, `[a-z0-9_]`, at most 63 characters as PostgreSQL requires)."""
    if config.slot:
        return config.slot
    raw = f"tidegate_{project.name}_{config.name}".lower()
    return re.sub(r"[^a-z0-9_]", "_", raw)[:63]
