"""The guard: the one place that decides what may leave, for whom, and in what form.

Every egress path (serve, sync, export, publish) asks `Guard.plan(context, product)`
for an `AccessPlan` and applies it; nothing reads a product for the outside world any
other way. The plan holds:

* the row filter: which subjects have a legal basis for the purpose, evaluated from
  the consent ledger at the moment of the request;
* one column treatment per column, from the column's classification and the purpose.

Plans apply three ways that give identical results: `select_sql` (a SQLGlot rewrite
run by DuckDB, for bulk paths), `apply_row` (values, for serving single rows) and
`apply_arrow` (Arrow compute on batches, for streaming and batch serving).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from tidegate.errors import BadRequestError, ForbiddenError, NotFoundError
from tidegate.privacy.consent import ConsentView, RowFilter, consent_view_of
from tidegate.privacy.treatments import HashKey, apply_sql, apply_value, purpose_key
from tidegate.project.models import TreatmentSpec
from tidegate.project.project import Project
from tidegate.project.subjects import consent_subject_type

if TYPE_CHECKING:
    from tidegate.platform import Platform

SUBJECTS_RELATION = "__tidegate_subjects"


@dataclass(frozen=True)
class AccessContext:
    """Who is asking, in which roles, and why. Every egress carries one."""

    principal: str
    roles: tuple[str, ...]
    purpose: str | None


@dataclass(frozen=True)
class ColumnPlan:
    name: str
    type: str
    classification: str | None
    treatment: TreatmentSpec


@dataclass(frozen=True)
class AccessPlan:
    context: AccessContext
    product: str
    purpose: str
    legal_basis: str
    key_column: str
    subject_column: str | None
    columns: tuple[ColumnPlan, ...]
    row_filter: RowFilter | None
    hash_key: HashKey = field(repr=False)
    #: the kind of person `subject_column` identifies (project/subjects.py)
    subject_type: str | None = None

    @property
    def visible_columns(self) -> list[ColumnPlan]:
        return [c for c in self.columns if c.treatment.treatment != "drop"]

    def treatments(self) -> dict[str, str]:
        """column -> treatment, for audit records (dropped columns included)."""
        return {c.name: c.treatment.treatment for c in self.columns}

    def admits(self, row: dict[str, Any]) -> bool:
        if self.row_filter is None or self.subject_column is None:
            return True
        return self.row_filter.admits(row.get(self.subject_column))

    def apply_row(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The row as this purpose may see it, or None when its subject is filtered out."""
        if not self.admits(row):
            return None
        return {
            c.name: apply_value(c.treatment, row.get(c.name), c.type, self.hash_key)
            for c in self.visible_columns
        }

    def apply_arrow(self, table: Any) -> Any:
        """An Arrow table or record batch as this purpose may see it (the streaming and
        batch-serving face): rows of subjects without a legal basis removed, columns treated
        (`treatments_arrow`), dropped columns gone. Gives what `select_sql` and `apply_row`
        give, column for column."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from tidegate.privacy.treatments_arrow import apply_arrow

        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if self.row_filter is not None and self.subject_column is not None:
            subject = pc.cast(table.column(self.subject_column), pa.string())
            members = pa.array(sorted(self.row_filter.subjects), pa.string())
            inside = pc.fill_null(pc.is_in(subject, value_set=members), False)
            if self.row_filter.mode == "allow":
                keep = pc.and_(inside, pc.is_valid(subject))
            else:
                keep = pc.or_(pc.is_null(subject), pc.invert(inside))
            table = table.filter(keep)
        columns = {
            c.name: apply_arrow(c.treatment, table.column(c.name), c.type, self.hash_key)
            for c in self.visible_columns
        }
        return pa.table(columns) if columns else table.select([])

    def select_sql(self, relation: str, *, with_subject: str | None = None) -> exp.Select:
        """`SELECT <treated columns> FROM relation WHERE <row filter>` as a syntax tree.

        The row filter refers to `__tidegate_subjects(subject VARCHAR)`, which the caller
        registers (see `subjects_table`) so subject ids are bound, never pasted as text.
        `with_subject` adds the raw subject id under that name, for internal bookkeeping
        of where each subject's data went; callers must strip it before rows leave.
        """
        source = exp.to_table(relation)
        source.set("alias", exp.TableAlias(this=exp.to_identifier("t")))
        projections = [
            exp.alias_(
                apply_sql(
                    c.treatment, exp.column(c.name, table="t", quoted=True), c.type, self.hash_key
                ),
                c.name,
                quoted=True,
            )
            for c in self.visible_columns
        ]
        if with_subject and self.subject_column:
            subject_id = exp.cast(
                exp.column(self.subject_column, table="t", quoted=True), "VARCHAR"
            )
            projections.append(exp.alias_(subject_id, with_subject, quoted=True))
        query = exp.select(*projections).from_(source)
        if self.row_filter is not None and self.subject_column is not None:
            subject = exp.cast(exp.column(self.subject_column, table="t", quoted=True), "VARCHAR")
            members = exp.select("subject").from_(SUBJECTS_RELATION)
            inside = exp.In(this=subject, query=exp.Subquery(this=members))
            if self.row_filter.mode == "allow":
                query = query.where(inside)
            else:
                query = query.where(
                    exp.or_(exp.Is(this=subject.copy(), expression=exp.Null()), exp.not_(inside))
                )
        return query

    def subjects_table(self) -> Any:
        """The row filter's subjects as an Arrow table to register under SUBJECTS_RELATION."""
        import pyarrow as pa

        subjects = sorted(self.row_filter.subjects) if self.row_filter else []
        return pa.table({"subject": pa.array(subjects, type=pa.string())})


def roles_allowing(
    project: Project, roles: tuple[str, ...] | list[str], purpose: str, product: str
) -> list[str]:
    """The roles among `roles` that alone allow `purpose` on `product`.

    Roles are never pooled: a key with role A (support on churn_risk) and role B
    (analytics on customer_360) may not read customer_360 for support, since no role
    ever granted that pair (issue 13)."""
    found = []
    for name in roles:
        config = project.policy.roles.get(name)
        if config is None or purpose not in config.purposes:
            continue
        if "*" in config.products or product in config.products:
            found.append(name)
    return found


def purposes_on(project: Project, roles: tuple[str, ...] | list[str], product: str) -> list[str]:
    """The product's purposes that some single role of `roles` allows on it (catalogue)."""
    return [
        purpose
        for purpose in project.products[product].config.purposes
        if roles_allowing(project, roles, purpose, product)
    ]


class Guard:
    def __init__(self, project: Project, consent: ConsentView, master_key: bytes) -> None:
        self.project = project
        self.consent = consent
        self._master_key = master_key
        self._keys: dict[str, HashKey] = {}

    def authorize(
        self, context: AccessContext, product_name: str, *, check_roles: bool = True
    ) -> str:
        """Check the purpose may be declared by these roles on this product; return it.

        `check_roles=False` is for syncs, whose purpose is fixed in reviewed project
        config rather than declared by a caller; every other check still applies.
        """
        policy = self.project.policy
        purpose = context.purpose
        if not purpose:
            raise BadRequestError(
                "a purpose is required for every egress; declare it (X-Purpose header, "
                "--purpose, or the sync's purpose)"
            )
        if purpose not in policy.purposes:
            raise ForbiddenError(
                f"unknown purpose {purpose!r}", purpose=purpose, known=sorted(policy.purposes)
            )
        if check_roles and purpose not in policy.purposes_of_roles(context.roles):
            raise ForbiddenError(
                f"principal {context.principal!r} may not use purpose {purpose!r}",
                purpose=purpose,
            )
        product = self.project.products.get(product_name)
        if product is None:
            raise NotFoundError(f"no product named {product_name!r}", product=product_name)
        if check_roles and not policy.roles_allow_product(context.roles, product_name):
            raise ForbiddenError(
                f"principal {context.principal!r} may not read product {product_name!r}",
                product=product_name,
            )
        if check_roles and not roles_allowing(self.project, context.roles, purpose, product_name):
            # roles are not pooled: one role must grant both the purpose and the product
            raise ForbiddenError(
                f"principal {context.principal!r}: no single role may use purpose "
                f"{purpose!r} on product {product_name!r}",
                purpose=purpose,
                product=product_name,
            )
        if purpose not in product.config.purposes:
            raise ForbiddenError(
                f"product {product_name!r} may not be used for {purpose!r}",
                purpose=purpose,
                allowed=list(product.config.purposes),
            )
        return purpose

    def plan(
        self,
        context: AccessContext,
        product_name: str,
        *,
        check_roles: bool = True,
        refresh: bool = True,
    ) -> AccessPlan:
        """`refresh=False`: decide on the consent view as it stands, without asking the
        ledger for newer entries; only for a caller that knows none were written since
        the view last caught up (the serving plan cache, which watches the store)."""
        purpose = self.authorize(context, product_name, check_roles=check_roles)
        product = self.project.products[product_name]
        policy = self.project.policy
        basis = policy.purposes[purpose].legal_basis
        columns = tuple(
            ColumnPlan(
                name=name,
                type=spec.type,
                classification=spec.category,
                treatment=policy.treatment_for(purpose, spec.classification),
            )
            for name, spec in product.columns.items()
        )
        row_filter = None
        if product.subject_column is not None:
            if refresh:
                self.consent.refresh()
            row_filter = self.consent.row_filter(purpose, basis)
            typed = product.subject_type  # None: a project built without the loader
            if typed is not None and typed != consent_subject_type(self.project):
                # the ledger's choices are another kind of person's (customer 3 is not
                # employee 3): none is recorded for this type; consent admits nobody
                row_filter = RowFilter(mode=row_filter.mode, subjects=frozenset())
        return AccessPlan(
            context=context,
            product=product_name,
            purpose=purpose,
            legal_basis=basis,
            key_column=product.config.key,
            subject_column=product.subject_column,
            columns=columns,
            row_filter=row_filter,
            hash_key=self.hash_key(purpose),
            subject_type=product.subject_type,
        )

    def hash_key(self, purpose: str) -> HashKey:
        key = self._keys.get(purpose)
        if key is None:
            key = purpose_key(self._master_key, purpose)
            self._keys[purpose] = key
        return key


def _guard(platform: Platform) -> Guard:
    from tidegate.privacy.monitors import monitors_of

    guard = Guard(platform.project, consent_view_of(platform), platform.master_key)
    monitors_of(platform)  # access monitors, on unless observe.access_monitors.enabled: false
    return guard


def guard_of(platform: Platform) -> Guard:
    """The platform's guard (one per platform object). A process that guards egress
    also watches its own audit trail (`privacy/monitors.py`, on by default)."""
    return platform.component(_guard)
