"""A small project with two kinds of people whose ids overlap: customers and employees.

Customer 3 and employee 3 are different people (so are 12 and 12). Every test of typed
subjects builds on it: an access or erasure request for one of them must never touch the
other."""

from __future__ import annotations

from pathlib import Path

TIDEGATE_YML = "name: typedshop\n"

POLICIES = """
subject_types:
  customer:
    description: Someone who buys from the shop.
    lookup: [email]
  employee:
    description: Someone who works for the shop.
    lookup: [email]
purposes:
  support:
    legal_basis: contract
roles:
  dpo:
    purposes: [support]
    subject_requests: true
treatments:
  "*":
    user: clear
"""

CUSTOMERS = """
name: customers
type: file
path: data/customers.csv
key: customer_id
subject: {column: customer_id, type: customer}
columns:
  customer_id: {type: BIGINT, classification: user.unique_id}
  email: {type: VARCHAR, classification: user.contact.email}
  name: {type: VARCHAR, classification: user.name}
"""

EMPLOYEES = """
name: employees
type: file
path: data/employees.csv
key: employee_id
subject: {column: employee_id, type: employee}
columns:
  employee_id: {type: BIGINT, classification: user.unique_id}
  email: {type: VARCHAR, classification: user.contact.email}
  name: {type: VARCHAR, classification: user.name}
"""

PRODUCT = """
name: {name}
owner: shop
key: {column}
subject: {{column: {column}, type: {kind}}}
purposes: [support]
sql: SELECT {column}, email, name FROM {source}
columns:
  {column}: {{type: BIGINT, classification: user.unique_id}}
  email: {{type: VARCHAR, classification: user.contact.email}}
  name: {{type: VARCHAR, classification: user.name}}
"""

CUSTOMER_ROWS = [(3, "ada@example.com", "Ada"), (12, "bob@example.com", "Bob")]
EMPLOYEE_ROWS = [(3, "eve@shop.example", "Eve"), (12, "max@shop.example", "Max")]


def write_typed_project(root: Path) -> Path:
    for folder in ("sources", "products", "policies", "syncs", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "tidegate.yml").write_text(TIDEGATE_YML)
    (root / "policies" / "policy.yml").write_text(POLICIES)
    (root / "sources" / "customers.yml").write_text(CUSTOMERS)
    (root / "sources" / "employees.yml").write_text(EMPLOYEES)
    for name, column, kind, source in (
        ("customer_profile", "customer_id", "customer", "customers"),
        ("employee_directory", "employee_id", "employee", "employees"),
    ):
        (root / "products" / f"{name}.yml").write_text(
            PRODUCT.format(name=name, column=column, kind=kind, source=source)
        )
    for name, column, rows in (
        ("customers", "customer_id", CUSTOMER_ROWS),
        ("employees", "employee_id", EMPLOYEE_ROWS),
    ):
        lines = [f"{column},email,name"] + [f"{i},{e},{n}" for i, e, n in rows]
        (root / "data" / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return root
