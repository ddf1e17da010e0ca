"""Break a valid project one way at a time; the loader must say exactly where.

Every test starts from the scaffolded `sales` project (the `project` fixture checks that
it loads cleanly), changes one thing, and asserts the `Problem` names the file a person
must edit, the line inside it (computed from the text written, not hard-coded), the field
and what is wrong.
"""

from __future__ import annotations

import pytest

from tidegate.errors import ConfigError

TG = "tidegate.yml"
PRODUCT = "products/customer_profile.yml"
SQL = "products/customer_profile.sql"
SOURCE = "sources/customers.yml"
PURPOSES = "policies/purposes.yml"
SYNC = "syncs/profiles_to_crm.yml"
UNKNOWN_KEY = "unknown key"


# ---------------------------------------------------------------- schema (pydantic) problems


def test_unknown_key_in_tidegate_yml(project) -> None:
    project.edit(TG, "serve:\n", "colour: blue\nserve:\n")
    project.expect(TG, project.line(TG, "colour: blue"), UNKNOWN_KEY, field="colour")


@pytest.mark.parametrize(
    ("file", "old", "new", "marker", "field"),
    [
        (
            PRODUCT,
            "  email: {type: VARCHAR,",
            "  email: {typo: 1, type: VARCHAR,",
            "typo: 1",
            "columns.email.typo",
        ),
        (
            PRODUCT,
            "  tenure_days: {type: BIGINT, classification: none, description: Days since sign-up}",
            "  tenure_days:\n    type: BIGINT\n    classification: none\n    nulable: false",
            "nulable",
            "columns.tenure_days.nulable",
        ),
        (
            SOURCE,
            "  signed_up: {type: DATE, description: First sign-up day}",
            "  signed_up: {type: DATE, descripton: First sign-up day}",
            "descripton",
            "columns.signed_up.descripton",
        ),
        (TG, "  port: 8787", "  port: 8787\n  threads: 4", "threads", "serve.threads"),
        (
            TG,
            "online: {type: sqlite, path: .tidegate/online.db}",
            "online:\n    type: redis\n    urll: redis://x",
            "urll",
            "backends.online.urll",
        ),
        (
            SYNC,
            "destination: {type: sqlite, path: .tidegate/crm.db, table: customer_profiles}",
            "destination:\n  type: sqlite\n  path: .tidegate/crm.db\n  table: t\n  tabel: t",
            "tabel",
            "destination.tabel",
        ),
    ],
    ids=["product-column-flow", "product-column-block", "source-column", "serve", "redis", "sync"],
)
def test_unknown_nested_key(project, file, old, new, marker, field) -> None:
    project.edit(file, old, new)
    project.expect(file, project.line(file, marker), UNKNOWN_KEY, field=field)


def test_unknown_key_under_a_column_named_like_a_source_type(project) -> None:
    """`file` is also a union tag the loader strips from locations; a column of that name
    must keep its place in the reported field and line."""
    project.edit(
        SOURCE,
        "  signed_up: {type: DATE, description: First sign-up day}",
        "  signed_up: {type: DATE, description: First sign-up day}\n  file: {colour: red}",
    )
    project.expect(SOURCE, project.line(SOURCE, "colour: red"), UNKNOWN_KEY, "columns.file.colour")


@pytest.mark.parametrize(
    ("file", "old", "new", "marker", "field", "fragment"),
    [
        (TG, "port: 8787", 'port: "abc"', "port:", "serve.port", "valid integer"),
        (TG, "port: 8787", "port: 70000", "port:", "serve.port", "less than 65536"),
        (TG, "freshness: 1d", "freshness: soon", "freshness:", "defaults.freshness", "duration"),
        (PRODUCT, "freshness: 1d", "freshness: soon", "freshness:", "freshness", "not a duration"),
        (
            PRODUCT,
            "purposes: [support, analytics]",
            "purposes: support",
            "purposes:",
            "purposes",
            "valid list",
        ),
        (
            PRODUCT,
            "  email: {type: VARCHAR,",
            "  email: {type: NOT_A_TYPE,",
            "NOT_A_TYPE",
            "columns.email.type",
            "not a SQL type",
        ),
        (SYNC, "mode: upsert", "mode: sideways", "mode:", "mode", "'upsert'"),
        (PRODUCT, "name: customer_profile", "name: Customer-Profile", "name:", "name", "valid"),
    ],
    ids=["port-str", "port-range", "default-fresh", "freshness", "list", "type", "mode", "name"],
)
def test_wrong_type_or_value(project, file, old, new, marker, field, fragment) -> None:
    project.edit(file, old, new)
    project.expect(file, project.line(file, marker), fragment, field=field)


def test_columns_given_a_list(project) -> None:
    text = project.read(PRODUCT)
    start = text.index("columns:\n")
    project.write(PRODUCT, text[:start] + "columns:\n  - customer_id\n  - email\n")
    project.expect(PRODUCT, project.line(PRODUCT, "columns:"), "valid dictionary", "columns")


def test_required_field_missing(project) -> None:
    project.edit(PRODUCT, "owner: sales-team\n", "")
    # a missing key has no line of its own; the problem points at the top of the document
    project.expect(PRODUCT, project.line(PRODUCT, "name: customer_profile"), "required", "owner")


@pytest.mark.parametrize(
    ("file", "old", "new", "marker"),
    [
        (PRODUCT, "key: customer_id", "key: cust_id", "key: cust_id"),
        (
            PRODUCT,
            "subject: {column: customer_id, type: customer}",
            "subject: {column: person, type: customer}",
            "subject: {column: person",
        ),
        (SOURCE, "key: customer_id", "key: cust_id", "key: cust_id"),
    ],
    ids=["product-key", "product-subject", "source-key"],
)
def test_key_column_not_among_declared_columns(project, file, old, new, marker) -> None:
    project.edit(file, old, new)
    field = marker.split(":")[0]
    project.expect(file, project.line(file, marker), "not among the declared columns", field)


def test_sql_and_sql_file_both_given(project) -> None:
    project.edit(PRODUCT, "sql_file: customer_profile.sql\n", "sql_file: x.sql\nsql: SELECT 1\n")
    project.expect(PRODUCT, project.line(PRODUCT, "name:"), "exactly one of sql")


def test_sql_file_not_found(project) -> None:
    project.edit(PRODUCT, "sql_file: customer_profile.sql", "sql_file: profile.sql")
    project.expect(PRODUCT, project.line(PRODUCT, "sql_file:"), "not found", field="sql_file")


# ---------------------------------------------------------------- YAML syntax


@pytest.mark.parametrize(
    ("file", "old", "new", "marker"),
    [
        (PRODUCT, "owner: sales-team", "owner: sales: team", "sales: team"),
        (TG, "  host: 127.0.0.1", "  host: 127.0.0.1\n\tport: 1", "\tport"),
        (SOURCE, "key: customer_id", "key: customer_id\n- stray", "- stray"),
    ],
    ids=["mapping-in-value", "tab", "item-in-mapping"],
)
def test_malformed_yaml(project, file, old, new, marker) -> None:
    project.edit(file, old, new)
    problems = project.expect(file, project.line(file, marker), "YAML syntax error", field="")
    assert len(problems) == 1


@pytest.mark.parametrize(
    ("file", "old", "new", "marker", "field"),
    [
        (PRODUCT, "freshness: 1d", "freshness: 1d\nowner: someone", "owner: someone", "owner"),
        (
            TG,
            "  host: 127.0.0.1\n",
            "  host: 127.0.0.1\n  host: 0.0.0.0\n",
            "host: 0.0.0.0",
            "serve.host",
        ),
        (
            PRODUCT,
            "  tenure_days:",
            "  email: {type: VARCHAR}\n  tenure_days:",
            "email: {type: VARCHAR}",
            "columns.email",
        ),
    ],
    ids=["top-level", "nested", "column"],
)
def test_duplicate_key_in_one_mapping(project, file, old, new, marker, field) -> None:
    project.edit(file, old, new)
    project.expect(file, project.line(file, marker), "duplicate key", field=field)


# ---------------------------------------------------------------- SQL


@pytest.mark.parametrize(
    ("old", "new", "marker", "fragment"),
    [
        ("  email,\n", "  email AS AS x,\n", "AS AS", "SQL syntax error"),
        ("FROM customers", "FROM customers\nWHERE country IN ('GB'", "WHERE", "Expecting )"),
        ("FROM customers", "FROM customers WHERE (((\n", "(((", "SQL syntax error"),
    ],
    ids=["double-as", "unclosed-paren", "dangling-paren"],
)
def test_sql_syntax_error_points_into_the_sql_file(project, old, new, marker, fragment) -> None:
    project.edit(SQL, old, new)
    project.expect(SQL, project.line(SQL, marker), fragment, field="sql")


def test_sql_that_is_not_one_select(project) -> None:
    project.write(SQL, project.read(SQL) + ";\nSELECT 1\n")
    project.expect(SQL, 1, "exactly one SELECT")


def test_sql_referencing_an_unknown_table(project) -> None:
    project.edit(SQL, "FROM customers", "FROM customers\nJOIN nowhere USING (customer_id)")
    problems = project.expect(SQL, project.line(SQL, "JOIN nowhere"), "unknown table 'nowhere'")
    assert [p.field for p in problems] == ["sql"]


def test_sql_referencing_a_qualified_table(project) -> None:
    project.edit(SQL, "FROM customers", "FROM\n  main.customers")
    project.expect(SQL, project.line(SQL, "main.customers"), "bare name", field="sql")


def test_declared_column_missing_from_the_sql_result(project) -> None:
    project.edit(SQL, "  country,\n", "")
    problems = project.expect(
        PRODUCT,
        project.line(PRODUCT, "  country:"),
        "declared column 'country' is not returned by the SQL",
        field="columns.country",
    )
    assert len(problems) == 1


def test_sql_returning_an_undeclared_column(project) -> None:
    project.edit(SQL, "  country,\n", "  country,\n  signed_up,\n")
    problems = project.expect(
        PRODUCT,
        project.line(PRODUCT, "columns:"),
        "the SQL returns column 'signed_up', which the contract does not declare",
        field="columns",
    )
    assert len(problems) == 1


def test_sql_selecting_a_column_the_source_does_not_have(project) -> None:
    project.edit(SQL, "  country,\n", "  country,\n  phone,\n")
    project.expect(SQL, 1, "SQL error", field="sql")


# ---------------------------------------------------------------- inline SQL


def _inline(project, sql_lines: list[str]) -> None:
    block = "sql: |\n" + "".join(f"  {line}\n" for line in sql_lines)
    project.edit(PRODUCT, "sql_file: customer_profile.sql\n", block)


def test_inline_sql_error_on_its_second_line_maps_to_the_yaml_line(project) -> None:
    _inline(project, ["SELECT customer_id, email, country, 1 AS tenure_days", "FROM customerz"])
    project.expect(PRODUCT, project.line(PRODUCT, "FROM customerz"), "customerz", field="sql")


def test_inline_sql_syntax_error_on_its_second_line(project) -> None:
    _inline(project, ["SELECT customer_id, email AS AS x,", "  country FROM customers"])
    line = project.line(PRODUCT, "email AS AS")
    assert line == project.line(PRODUCT, "sql: |") + 1
    project.expect(PRODUCT, line, "SQL syntax error", field="sql")


def test_valid_inline_sql_loads(project) -> None:
    _inline(
        project,
        ["SELECT customer_id, email, country,", "  2 AS tenure_days", "FROM customers"],
    )
    product = project.load().products["customer_profile"]
    assert product.sql_path == PRODUCT
    assert product.sql_first_line == project.line(PRODUCT, "sql: |") + 1
    assert product.depends_on == {"customers"}


def test_single_line_inline_sql_error_is_on_the_key_line(project) -> None:
    project.edit(
        PRODUCT,
        "sql_file: customer_profile.sql\n",
        "sql: SELECT customer_id, email, country, 1 AS tenure_days FROM nowhere\n",
    )
    project.expect(PRODUCT, project.line(PRODUCT, "FROM nowhere"), "unknown table", "sql")


# ---------------------------------------------------------------- across files


def test_duplicate_product_names_in_two_files(project) -> None:
    copy = "products/zz_copy.yml"
    project.write(copy, project.read(PRODUCT))
    problems = project.expect(copy, project.line(copy, "name:"), "duplicate product name", "name")
    (problem,) = problems
    assert PRODUCT in problem.message


def test_product_named_like_a_source(project) -> None:
    project.write(
        "products/customers.yml",
        "name: customers\nowner: me\nsql: SELECT customer_id FROM customers\n"
        "key: customer_id\npurposes: [support]\ncolumns:\n"
        "  customer_id: {type: BIGINT, classification: user.unique_id}\n",
    )
    project.expect("products/customers.yml", 1, "same name as a source", field="name")


def _product(project, name: str, reads: str) -> None:
    project.write(
        f"products/{name}.yml",
        f"# {name} reads {reads}\nname: {name}\nowner: me\nsql_file: {name}.sql\n"
        "key: customer_id\npurposes: [support]\ncolumns:\n"
        "  customer_id: {type: BIGINT, classification: user.unique_id}\n",
    )
    project.write(f"products/{name}.sql", f"SELECT customer_id\nFROM {reads}\n")


def test_products_depending_on_each_other_in_a_cycle(project) -> None:
    _product(project, "alpha", reads="beta")
    _product(project, "beta", reads="alpha")
    problems = project.problems()
    (problem,) = problems
    assert problem.file in {"products/alpha.yml", "products/beta.yml"}
    assert problem.line == project.line(problem.file, "sql_file:")
    assert problem.field == "sql_file"
    assert "cycle" in problem.message
    assert "alpha" in problem.message
    assert "beta" in problem.message


def test_products_reading_products_load_in_dependency_order(project) -> None:
    _product(project, "gamma", reads="customer_profile")
    _product(project, "alpha", reads="gamma")
    loaded = project.load()
    assert loaded.products["alpha"].depends_on == {"gamma"}
    order = loaded.build_order()
    assert order.index("customer_profile") < order.index("gamma") < order.index("alpha")
    assert loaded.downstream_of({"gamma"}) == ["gamma", "alpha"]


def test_undefined_purpose_in_a_products_purposes_list(project) -> None:
    project.edit(
        PRODUCT,
        "purposes: [support, analytics]",
        "purposes:\n  - support\n  - spying\n  - analytics",
    )
    project.expect(
        PRODUCT, project.line(PRODUCT, "- spying"), "'spying' is not defined", "purposes.1"
    )


def test_role_naming_an_undefined_purpose(project) -> None:
    project.edit(
        PURPOSES,
        "analyst: {purposes: [analytics]}",
        "analyst:\n    purposes:\n      - analytics\n      - astrology",
    )
    project.expect(
        PURPOSES,
        project.line(PURPOSES, "- astrology"),
        "role 'analyst' names undefined purpose 'astrology'",
        field="roles.analyst.purposes.1",
    )


def test_role_naming_an_unknown_product(project) -> None:
    project.edit(
        PURPOSES,
        "marketer: {purposes: [marketing.email]}",
        "marketer:\n    purposes: [support]"
        "\n    products:\n      - customer_profile\n      - leads",
    )
    project.expect(
        PURPOSES,
        project.line(PURPOSES, "- leads"),
        "unknown product 'leads'",
        field="roles.marketer.products.1",
    )


def test_purpose_defined_in_two_policy_files(project) -> None:
    extra = "policies/zz_more.yml"
    project.write(
        extra,
        "purposes:\n  fraud: {legal_basis: legal_obligation}\n  support: {legal_basis: contract}\n",
    )
    project.expect(
        extra,
        project.line(extra, "support:"),
        "already defined in " + PURPOSES,
        field="purposes.support",
    )


def test_treatments_for_an_undefined_purpose(project) -> None:
    file = "policies/treatments.yml"
    project.edit(
        file,
        "default_treatment: drop",
        "  sales:\n    user.contact: clear\ndefault_treatment: drop",
    )
    project.expect(
        file, project.line(file, "  sales:"), "undefined purpose 'sales'", "treatments.sales"
    )


@pytest.mark.parametrize(
    ("old", "new", "marker", "field", "fragment"),
    [
        ("product: customer_profile", "product: leads", "product:", "product", "unknown product"),
        ("purpose: support", "purpose: astrology", "purpose:", "purpose", "undefined purpose"),
        (
            "purpose: support",
            "purpose: marketing.email",
            "purpose:",
            "purpose",
            "does not allow purpose 'marketing.email'",
        ),
        (
            "mode: upsert",
            "fields:\n  customer_id: customer_id\n  mail: e_mail\nmode: upsert",
            "mail: e_mail",
            "fields.mail",
            "maps from 'e_mail', not a column of 'customer_profile'",
        ),
        (
            "mode: upsert",
            "fields:\n  mail: email\nmode: upsert",
            "fields:",
            "fields",
            "destination key 'customer_id' is not among the synced fields",
        ),
        (
            "mode: upsert",
            "key: cid\nmode: upsert",
            "key: cid",
            "key",
            "destination key 'cid'",
        ),
    ],
    ids=["unknown-product", "undefined-purpose", "purpose-not-allowed", "column", "key", "key2"],
)
def test_sync_problems(project, old, new, marker, field, fragment) -> None:
    project.edit(SYNC, old, new)
    project.expect(SYNC, project.line(SYNC, marker), fragment, field=field)


# ---------------------------------------------------------------- reporting


def test_several_problems_are_all_reported(project) -> None:
    project.edit(TG, "serve:\n", "colour: blue\nserve:\n")
    project.edit(PRODUCT, "freshness: 1d", "freshness: soon")
    project.edit(SOURCE, "owner: sales-team", "owner: sales: team")
    project.edit(SYNC, "mode: upsert", "mode: sideways")
    project.edit(PURPOSES, "legal_basis: contract", "legal_basis: whim")

    problems = project.problems()

    where = {(p.file, p.line, p.field) for p in problems}
    assert where == {
        (TG, project.line(TG, "colour"), "colour"),
        (PRODUCT, project.line(PRODUCT, "freshness"), "freshness"),
        (SOURCE, project.line(SOURCE, "sales: team"), ""),
        (SYNC, project.line(SYNC, "mode:"), "mode"),
        (PURPOSES, project.line(PURPOSES, "whim"), "purposes.support.legal_basis"),
    }
    assert problems == sorted(problems)


def test_several_problems_in_one_file_are_all_reported(project) -> None:
    project.edit(PRODUCT, "freshness: 1d", "freshness: soon\ncolour: blue")
    project.edit(PRODUCT, "  email: {type: VARCHAR,", "  email: {type: NOT_A_TYPE,")
    project.edit(PRODUCT, "purposes: [support, analytics]", "purposes: [support, Analytics]")

    where = {(p.file, p.line, p.field) for p in project.problems()}

    assert where == {
        (PRODUCT, project.line(PRODUCT, "freshness"), "freshness"),
        (PRODUCT, project.line(PRODUCT, "colour"), "colour"),
        (PRODUCT, project.line(PRODUCT, "NOT_A_TYPE"), "columns.email.type"),
        (PRODUCT, project.line(PRODUCT, "purposes:"), "purposes.1"),
    }


def test_several_cross_file_problems_are_all_reported(project) -> None:
    project.edit(SQL, "FROM customers", "FROM customers\nJOIN nowhere USING (customer_id)")
    project.edit(PRODUCT, "purposes: [support, analytics]", "purposes: [support, spying]")
    project.edit(SYNC, "product: customer_profile", "product: leads")

    where = {(p.file, p.line) for p in project.problems()}

    assert where == {
        (SQL, project.line(SQL, "nowhere")),
        (PRODUCT, project.line(PRODUCT, "spying")),
        (SYNC, project.line(SYNC, "leads")),
    }


def test_str_of_config_error_lists_file_and_line(project) -> None:
    project.edit(TG, "serve:\n", "colour: blue\nserve:\n")
    project.edit(SYNC, "mode: upsert", "mode: sideways")
    with pytest.raises(ConfigError) as info:
        project.load()
    text = str(info.value)
    assert text.startswith("2 problems in the project:")
    assert f"{TG}:{project.line(TG, 'colour')}: [colour] unknown key" in text
    assert f"{SYNC}:{project.line(SYNC, 'mode:')}: [mode]" in text
    assert info.value.root == project.root.resolve()
    assert info.value.to_error_detail()["error"]["code"] == "invalid_project"


# ---------------------------------------------------------------- environment overrides


def test_env_overrides_a_nested_setting(project, monkeypatch: pytest.MonkeyPatch) -> None:
    assert project.load().config.serve.port == 8787
    monkeypatch.setenv("TIDEGATE__SERVE__PORT", "9999")
    monkeypatch.setenv("TIDEGATE__BACKENDS__STORE__PATH", "/tmp/elsewhere.duckdb")
    config = project.load().config
    assert config.serve.port == 9999
    assert config.serve.host == "127.0.0.1"
    assert config.backends.store.path == "/tmp/elsewhere.duckdb"


def test_env_override_is_validated_like_the_file(project, monkeypatch) -> None:
    monkeypatch.setenv("TIDEGATE__SERVE__PORT", "abc")
    project.expect(TG, project.line(TG, "port:"), "valid integer", field="serve.port")


def test_env_override_with_an_unknown_key_is_a_problem(project, monkeypatch) -> None:
    monkeypatch.setenv("TIDEGATE__SERVE__COLOUR", "blue")
    # the key is not in the file; the problem points at the nearest line that is (`serve:`)
    project.expect(TG, project.line(TG, "serve:"), UNKNOWN_KEY, field="serve.colour")
