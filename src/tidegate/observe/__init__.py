"""Observability beside every stage: quality gates, five pillars, lineage, contracts, metrics.

* `config`     the `checks:` of a product contract and the `observe:` section of tidegate.yml
* `quality`    checks compiled to SQL, run on a freshly built version before it is published
* `alerts`     log + Slack-compatible webhooks, routed by product owner, deduplicated
* `pillars`    freshness, volume, distribution, schema per build and incremental update
* `anomaly`    z-scores over a training window, seasonality, direction, floors
* `timeseries` the observations, in their own tables of the metadata SQLite file
* `lineage`    column lineage from product SQL (sqlglot), through syncs and the API
* `openlineage` RunEvents for builds, incremental updates and syncs
* `contracts`  Open Data Contract Standard v3 export/import, and breaking-change diffs
* `metrics`    Prometheus series
* `hooks`      the small calls the builder and the incremental path make into this package
"""
