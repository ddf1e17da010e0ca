"""A support desk keyed by agent, for the incremental-equals-batch tests.

Sources: `ticket_events` (JSON events, one per change of a ticket, deduplicated by
event id, possibly late), `tickets` (the tickets table by Debezium CDC), `agents`
(CDC), `calls` (JSON events). Products, all keyed by `agent_id`: counts of open tickets
from the events (latest event per ticket: a closure over `ticket_id`) and from the
table, a join of all four, a product over a product, and one top-N that must stay
batch.
"""

from __future__ import annotations

from pathlib import Path

FILES = {
    "tidegate.yml": "name: desk\n",
    "sources/ticket_events.yml": """
name: ticket_events
type: stream
event_id: event_id
columns:
  event_id: {type: VARCHAR, nullable: false}
  ticket_id: {type: BIGINT, nullable: false}
  agent_id: {type: BIGINT}
  status: {type: VARCHAR}
  at: {type: BIGINT}
""",
    "sources/tickets.yml": """
name: tickets
type: stream
format: debezium
table: tickets
key: ticket_id
columns:
  ticket_id: {type: BIGINT, nullable: false}
  agent_id: {type: BIGINT}
  status: {type: VARCHAR}
  note: {type: VARCHAR}
""",
    "sources/agents.yml": """
name: agents
type: stream
format: debezium
table: agents
key: agent_id
columns:
  agent_id: {type: BIGINT, nullable: false}
  team: {type: VARCHAR}
""",
    "sources/calls.yml": """
name: calls
type: stream
event_id: call_id
columns:
  call_id: {type: VARCHAR, nullable: false}
  agent_id: {type: BIGINT}
  minutes: {type: BIGINT}
""",
    "products/open_from_events.yml": """
name: open_from_events
owner: desk
key: agent_id
freshness: 1s
purposes: [support]
sql: |
  WITH latest AS (
    SELECT * FROM ticket_events
    QUALIFY row_number() OVER (PARTITION BY ticket_id ORDER BY at DESC, event_id DESC) = 1
  )
  SELECT agent_id, count(*) FILTER (WHERE status = 'open') AS open_tickets
  FROM latest WHERE agent_id IS NOT NULL GROUP BY agent_id
columns:
  agent_id: {type: BIGINT, classification: none, nullable: false}
  open_tickets: {type: BIGINT, classification: none}
""",
    "products/open_per_agent.yml": """
name: open_per_agent
owner: desk
key: agent_id
freshness: 1s
purposes: [support]
sql: |
  SELECT agent_id, count(*) FILTER (WHERE status = 'open') AS open_tickets,
         max(note) AS last_note
  FROM tickets WHERE agent_id IS NOT NULL GROUP BY agent_id
columns:
  agent_id: {type: BIGINT, classification: none, nullable: false}
  open_tickets: {type: BIGINT, classification: none}
  last_note: {type: VARCHAR, classification: none}
""",
    "products/agent_desk.yml": """
name: agent_desk
owner: desk
key: agent_id
freshness: 1s
purposes: [support]
sql: |
  WITH t AS (
    SELECT agent_id, count(*) AS tickets FROM tickets GROUP BY agent_id
  ), c AS (
    SELECT agent_id, sum(minutes) AS minutes, count(*) AS calls FROM calls GROUP BY agent_id
  ), e AS (
    SELECT agent_id, count(DISTINCT ticket_id) AS touched FROM ticket_events GROUP BY agent_id
  )
  SELECT a.agent_id, a.team, coalesce(t.tickets, 0) AS tickets,
         coalesce(c.minutes, 0) AS minutes, coalesce(c.calls, 0) AS calls,
         coalesce(e.touched, 0) AS touched
  FROM agents AS a
  LEFT JOIN t ON t.agent_id = a.agent_id
  LEFT JOIN c ON c.agent_id = a.agent_id
  LEFT JOIN e ON e.agent_id = a.agent_id
columns:
  agent_id: {type: BIGINT, classification: none, nullable: false}
  team: {type: VARCHAR, classification: none}
  tickets: {type: BIGINT, classification: none}
  minutes: {type: BIGINT, classification: none}
  calls: {type: BIGINT, classification: none}
  touched: {type: BIGINT, classification: none}
""",
    "products/busy_agents.yml": """
name: busy_agents
owner: desk
key: agent_id
freshness: 1s
purposes: [support]
sql: |
  SELECT d.agent_id, d.team, o.open_tickets
  FROM agent_desk AS d JOIN open_per_agent AS o ON o.agent_id = d.agent_id
  WHERE o.open_tickets >= 1
columns:
  agent_id: {type: BIGINT, classification: none, nullable: false}
  team: {type: VARCHAR, classification: none}
  open_tickets: {type: BIGINT, classification: none}
""",
    "products/top_agents.yml": """
name: top_agents
owner: desk
key: agent_id
freshness: 1s
purposes: [support]
sql: |
  SELECT agent_id, open_tickets FROM open_per_agent
  ORDER BY open_tickets DESC, agent_id LIMIT 2
columns:
  agent_id: {type: BIGINT, classification: none, nullable: false}
  open_tickets: {type: BIGINT, classification: none}
""",
    "policies/policy.yml": """
purposes:
  support: {legal_basis: contract}
roles:
  ingester: {purposes: [support], products: [], ingest: ["*"]}
treatments:
  "*":
    user: clear
""",
}


def write_desk_project(root: Path, *, log: str | None = None, suffix: str = "") -> Path:
    """The desk project in `root`; `log`: a `backends.log` YAML flow mapping (Kafka), with
    topics named `<source><suffix>` so that runs do not share topics."""
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = text.lstrip("\n")
        if relative == "tidegate.yml" and log is not None:
            text += f"backends:\n  log: {log}\n"
        if relative.startswith("sources/") and suffix:
            text += f"topic: {path.stem}{suffix}\n"
        path.write_text(text)
    return root
