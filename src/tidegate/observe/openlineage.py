"""OpenLineage RunEvents for builds, incremental updates (batched) and sync runs.

Events are made with openlineage-python's generated classes and sent by its transports
(`observe.openlineage.transport`: file, http, kafka, console; `none` sends nothing).
Why that library: it is the reference client, its facet classes carry the official
`_schemaURL`s, and its transports (HTTP with retries, Kafka via confluent-kafka, file)
are the ones Marquez, DataHub and others are tested against.

A build's output dataset carries `schema`, `columnLineage` (direct and indirect,
from `lineage`), `dataQualityMetrics` (from the pillars) and `dataQualityAssertions`
(from the checks); its inputs carry `schema`. A FAIL adds `errorMessage`.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from tidegate.project.observe_config import OpenLineageConfig
from tidegate.timestamps import now_timestamp

if TYPE_CHECKING:
    from tidegate.observe.pillars import Observation
    from tidegate.observe.quality import QualityReport
    from tidegate.project.project import Project

log = logging.getLogger(__name__)
PRODUCER = "https://github.com/tidegate/tidegate"
#: the DataQualityMetrics facet version of the official spec we validate against
METRICS_SCHEMA = (
    "https://openlineage.io/spec/facets/1-0-0/DataQualityMetricsDatasetFacet.json"
    "#/$defs/DataQualityMetricsDatasetFacet"
)


def _now() -> str:
    return now_timestamp()


def make_transport(config: OpenLineageConfig, root: Any) -> Any:
    """An openlineage-python transport for the config, or None for `none`."""
    if config.transport == "none":
        return None
    from tidegate.extras import require

    require("lineage", "openlineage.client")
    if config.transport == "console":
        from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport

        return ConsoleTransport(ConsoleConfig())
    if config.transport == "file":
        from pathlib import Path

        from openlineage.client.transport.file import FileConfig, FileTransport

        path = Path(config.path)
        path = path if path.is_absolute() else Path(root) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileTransport(FileConfig(log_file_path=str(path), append=True))
    if config.transport == "http":
        import os

        from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport

        if not config.url:
            raise ValueError("observe.openlineage.transport: http needs a url")
        http = HttpConfig(url=config.url, endpoint=config.endpoint)
        if config.api_key_env and os.environ.get(config.api_key_env):
            http.auth = ApiKeyTokenProvider({"apiKey": os.environ[config.api_key_env]})
        return HttpTransport(http)
    from tidegate.extras import require

    require("kafka", "confluent_kafka")  # the Kafka transport needs it
    from openlineage.client.transport.kafka import KafkaConfig, KafkaTransport

    return KafkaTransport(
        KafkaConfig(
            config={"bootstrap.servers": config.bootstrap, "client.id": "tidegate-openlineage"},
            topic=config.topic,
            flush=True,
        )
    )


class LineageEmitter:
    """Builds and sends RunEvents for one project. Sending never raises."""

    def __init__(self, project: Project, transport: Any = None) -> None:
        self.project = project
        self.config = project.config.observe.openlineage
        self.namespace = self.config.namespace or f"tidegate.{project.name}"
        self.dataset_namespace = f"duckdb://{project.name}"
        self._transport = transport
        self._transport_made = transport is not None
        # `transport: none` (the default) builds no event at all, so openlineage-python
        # (the `lineage` extra) is only needed when lineage is switched on.
        self.enabled = transport is not None or self.config.transport != "none"
        if self.enabled and transport is None:
            from tidegate.extras import MissingExtraError, require

            try:
                require("lineage", "openlineage.client")
            except MissingExtraError as err:  # lineage must not break the pipeline: say so once
                log.warning("openlineage: %s", err.message)
                self.enabled = False
        self._lineage: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._batches: dict[str, dict[str, Any]] = {}

    @property
    def transport(self) -> Any:
        if not self._transport_made:
            self._transport_made = True
            try:
                self._transport = make_transport(self.config, self.project.root)
            except Exception as err:
                log.warning(
                    "openlineage: cannot open the %s transport: %s", self.config.transport, err
                )
        return self._transport

    def emit(self, event: Any) -> None:
        transport = self.transport
        if transport is None:
            return
        try:
            transport.emit(event)
        except Exception as err:  # lineage must not break the pipeline
            log.warning("openlineage: emitting %s failed: %s", event.eventType, err)

    # ---------------------------------------------------------------- facets

    def _schema_facet(self, columns: dict[str, Any]) -> Any:
        from openlineage.client.generated.schema_dataset import (
            SchemaDatasetFacet,
            SchemaDatasetFacetFields,
        )

        return SchemaDatasetFacet(
            fields=[
                SchemaDatasetFacetFields(
                    name=name, type=spec.type, description=spec.description or None
                )
                for name, spec in columns.items()
            ],
            producer=PRODUCER,
        )

    def relation_dataset_name(self, relation: str) -> str:
        schema = "raw" if relation in self.project.sources else "products"
        return f"{schema}.{relation}"

    def _column_lineage_facet(self, name: str) -> Any:
        from openlineage.client.generated.column_lineage_dataset import (
            ColumnLineageDatasetFacet,
            Fields,
            InputField,
            Transformation,
        )

        from tidegate.observe.lineage import product_lineage

        if name not in self._lineage:
            self._lineage[name] = product_lineage(self.project.products[name], self.project)
        found = self._lineage[name]

        def field(ref: tuple[str, str], kind: str, subtype: str) -> Any:
            return InputField(
                namespace=self.dataset_namespace,
                name=self.relation_dataset_name(ref[0]),
                field=ref[1],
                transformations=[Transformation(type=kind, subtype=subtype)],
            )

        subtypes = {"filter": "FILTER", "join": "JOIN", "group_by": "GROUP_BY"}
        fields = {}
        for column, refs in found.direct.items():
            inputs = [field(ref, "DIRECT", "TRANSFORMATION") for ref in sorted(refs)]
            for ref, kinds in sorted(found.indirect.get(column, {}).items()):
                inputs += [field(ref, "INDIRECT", subtypes[k]) for k in sorted(kinds)]
            fields[column] = Fields(inputFields=inputs)
        dataset = [
            field(ref, "INDIRECT", subtypes[kind])
            for ref, kinds in sorted(found.dataset.items())
            for kind in sorted(kinds)
        ]
        return ColumnLineageDatasetFacet(fields=fields, dataset=dataset, producer=PRODUCER)

    def _metrics_facet(self, observation: Observation) -> Any:
        from openlineage.client.generated.data_quality_metrics_dataset import (
            ColumnMetrics,
            DataQualityMetricsDatasetFacet,
        )

        rows = observation.value("volume.rows")
        per_column: dict[str, ColumnMetrics] = {}
        for column in observation.schema.columns:
            nulls = observation.value("null_percent", column)
            distinct = observation.value("distinct_count", column)
            per_column[column] = ColumnMetrics(
                nullCount=round(nulls * rows / 100) if nulls is not None and rows else None,
                distinctCount=int(distinct) if distinct is not None else None,
                min=observation.value("min", column),
                max=observation.value("max", column),
                quantiles=None,
            )
        facet = DataQualityMetricsDatasetFacet(
            columnMetrics=per_column, rowCount=int(rows) if rows is not None else None
        )
        facet._producer = PRODUCER
        facet._schemaURL = METRICS_SCHEMA
        return facet

    def _assertions_facet(self, report: QualityReport) -> Any:
        from openlineage.client.generated.data_quality_assertions_dataset import (
            Assertion,
            DataQualityAssertionsDatasetFacet,
        )

        return DataQualityAssertionsDatasetFacet(
            assertions=[
                Assertion(
                    assertion=r.type,
                    success=r.passed,
                    column=r.column or None,
                    severity=r.severity,
                    name=r.name,
                    expected=r.expected,
                    actual=(
                        str(r.failing_rows)
                        if r.failing_rows is not None
                        else (str(r.observed) if r.observed is not None else r.error or None)
                    ),
                )
                for r in report.results
            ],
            producer=PRODUCER,
        )

    # ---------------------------------------------------------------- events

    def _event(
        self,
        state: str,
        job: str,
        run_id: str,
        *,
        inputs: list[Any] | None = None,
        outputs: list[Any] | None = None,
        error: str | None = None,
        job_type: str = "BATCH",
        event_time: str | None = None,
    ) -> Any:
        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
        from openlineage.client.generated.error_message_run import ErrorMessageRunFacet
        from openlineage.client.generated.job_type_job import JobTypeJobFacet

        run_facets: dict[str, Any] = {}
        if error is not None:
            run_facets["errorMessage"] = ErrorMessageRunFacet(
                message=error, programmingLanguage="python", producer=PRODUCER
            )
        job_facets: dict[str, Any] = {
            "jobType": JobTypeJobFacet(
                processingType=job_type, integration="TIDEGATE", jobType="JOB", producer=PRODUCER
            )
        }
        return RunEvent(
            eventType=getattr(RunState, state),
            eventTime=event_time or _now(),
            run=Run(runId=run_id, facets=run_facets),
            job=Job(namespace=self.namespace, name=job, facets=job_facets),
            producer=PRODUCER,
            inputs=inputs or [],
            outputs=outputs or [],
        )

    def _inputs(self, name: str) -> list[Any]:
        from openlineage.client.event_v2 import InputDataset

        product = self.project.products[name]
        inputs = []
        for relation in sorted(product.depends_on):
            columns = (
                self.project.sources[relation].columns
                if relation in self.project.sources
                else self.project.products[relation].columns
            )
            inputs.append(
                InputDataset(
                    namespace=self.dataset_namespace,
                    name=self.relation_dataset_name(relation),
                    facets={"schema": self._schema_facet(columns)},
                )
            )
        return inputs

    def _output(
        self, name: str, observation: Observation | None, report: QualityReport | None
    ) -> Any:
        from openlineage.client.event_v2 import OutputDataset

        facets: dict[str, Any] = {
            "schema": self._schema_facet(self.project.products[name].columns),
        }
        try:
            facets["columnLineage"] = self._column_lineage_facet(name)
        except Exception as err:
            log.warning("openlineage: no column lineage for %s: %s", name, err)
        if observation is not None:
            facets["dataQualityMetrics"] = self._metrics_facet(observation)
        if report is not None and report.results:
            facets["dataQualityAssertions"] = self._assertions_facet(report)
        return OutputDataset(
            namespace=self.dataset_namespace, name=f"products.{name}", facets=facets
        )

    def build_started(self, name: str, version: int, run_id: str) -> None:
        if not self.enabled:
            return
        self.emit(self._event("START", f"build.{name}", run_id, inputs=self._inputs(name)))

    def build_completed(
        self,
        name: str,
        version: int,
        run_id: str,
        rows: int,
        observation: Observation | None,
        report: QualityReport | None,
    ) -> None:
        if not self.enabled:
            return
        self.emit(
            self._event(
                "COMPLETE",
                f"build.{name}",
                run_id,
                inputs=self._inputs(name),
                outputs=[self._output(name, observation, report)],
            )
        )

    def build_failed(
        self,
        name: str,
        version: int,
        run_id: str,
        message: str,
        observation: Observation | None,
        report: QualityReport | None,
    ) -> None:
        if not self.enabled:
            return
        self.emit(
            self._event(
                "FAIL",
                f"build.{name}",
                run_id,
                inputs=self._inputs(name),
                outputs=[self._output(name, observation, report)],
                error=message,
            )
        )

    # ---------------------------------------------------------------- incremental updates

    def incremental_update(self, name: str, changed: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        """Count one micro-batch's update of `name`; every `batch_updates` updates (or on
        `flush`) one START + COMPLETE pair stands for the whole batch."""
        with self._lock:
            batch = self._batches.setdefault(
                name, {"run_id": str(uuid4()), "updates": 0, "rows": 0, "started": _now()}
            )
            batch["updates"] += 1
            batch["rows"] += changed
            if batch["updates"] < self.config.batch_updates and not force:
                return
            del self._batches[name]
        self._emit_batch(name, batch)

    def flush(self) -> None:
        if not self.enabled:
            return
        with self._lock:
            batches, self._batches = self._batches, {}
        for name, batch in batches.items():
            self._emit_batch(name, batch)

    def _emit_batch(self, name: str, batch: dict[str, Any]) -> None:
        from openlineage.client.event_v2 import OutputDataset
        from openlineage.client.generated.output_statistics_output_dataset import (
            OutputStatisticsOutputDatasetFacet,
        )

        job = f"incremental.{name}"
        run_id = str(batch["run_id"])
        self.emit(
            self._event(
                "START",
                job,
                run_id,
                inputs=self._inputs(name),
                job_type="STREAMING",
                event_time=str(batch["started"]),
            )
        )
        output = OutputDataset(
            namespace=self.dataset_namespace,
            name=f"products.{name}",
            facets={
                "schema": self._schema_facet(self.project.products[name].columns),
                "columnLineage": self._column_lineage_facet(name),
            },
            outputFacets={
                "outputStatistics": OutputStatisticsOutputDatasetFacet(
                    rowCount=int(batch["rows"]), producer=PRODUCER
                )
            },
        )
        self.emit(
            self._event(
                "COMPLETE",
                job,
                run_id,
                inputs=self._inputs(name),
                outputs=[output],
                job_type="STREAMING",
            )
        )

    # ---------------------------------------------------------------- syncs

    def sync_event(
        self, state: str, sync: str, run_id: str, *, error: str | None = None, rows: int = 0
    ) -> None:
        if not self.enabled:
            return
        from openlineage.client.event_v2 import InputDataset, OutputDataset

        from tidegate.observe.lineage import sync_fields
        from tidegate.project.locations import destination_location

        cfg = self.project.syncs[sync].config
        product = self.project.products[cfg.product]
        namespace, target = destination_location(cfg.destination, self.project.root)
        facets: dict[str, Any] = {}
        if state != "START":
            from openlineage.client.generated.column_lineage_dataset import (
                ColumnLineageDatasetFacet,
                Fields,
                InputField,
                Transformation,
            )

            def transformation(treatment: str) -> Any:
                # clear: the value as it is; hash/mask/generalize: changed, and hiding
                # the value (OpenLineage's `masking`), with the treatment named
                if treatment == "clear":
                    return Transformation(type="DIRECT", subtype="IDENTITY", masking=False)
                return Transformation(
                    type="DIRECT", subtype="TRANSFORMATION", description=treatment, masking=True
                )

            facets["columnLineage"] = ColumnLineageDatasetFacet(
                fields={
                    name: Fields(
                        inputFields=[
                            InputField(
                                namespace=self.dataset_namespace,
                                name=f"products.{cfg.product}",
                                field=column,
                                transformations=[transformation(treatment)],
                            )
                            for column, treatment in sources
                        ]
                    )
                    for name, sources in sync_fields(self.project, sync).items()
                },
                producer=PRODUCER,
            )
        inputs = [
            InputDataset(
                namespace=self.dataset_namespace,
                name=f"products.{cfg.product}",
                facets={"schema": self._schema_facet(product.columns)},
            )
        ]
        outputs = [OutputDataset(namespace=namespace, name=target, facets=facets)]
        self.emit(
            self._event(state, f"sync.{sync}", run_id, inputs=inputs, outputs=outputs, error=error)
        )
