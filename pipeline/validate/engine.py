"""Great Expectations glue: run suites over in-memory tables and collect plain outcomes.

A :class:`Suite` is a name, a pandas DataFrame and a list of GE expectations. :func:`run_suites`
validates each suite in one ephemeral GE context (nothing is written but the Data Docs) and
returns one :class:`Outcome` per expectation, in the order the suite declared them.

Severity is GE's own ``severity`` field (``critical`` or ``warning``); the human sentence shown in
reports is the expectation's ``description``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

CRITICAL = "critical"
WARNING = "warning"


@dataclass
class Suite:
    """Expectations over one table. ``id_columns`` name the rows in example lists."""

    name: str
    data: pd.DataFrame
    expectations: list[Any]
    id_columns: tuple[str, ...] = ("split", "name")
    notes: str = ""


@dataclass
class Outcome:
    """The result of one expectation, free of GE types so it serialises to JSON."""

    suite: str
    expectation: str
    description: str
    severity: str
    success: bool
    column: str | None = None
    unexpected_count: int | None = None
    element_count: int | None = None
    observed: Any = None
    examples: list[Any] = field(default_factory=list)
    error: str | None = None

    @property
    def failed_critical(self) -> bool:
        return not self.success and self.severity == CRITICAL

    @property
    def failed_warning(self) -> bool:
        return not self.success and self.severity != CRITICAL


def expectation(kind: str, description: str, severity: str = CRITICAL, **kwargs: Any) -> Any:
    """Build the GE expectation ``kind`` (class name, e.g. ``"ExpectColumnValuesToBeInSet"``)."""
    import great_expectations.expectations as gxe

    return getattr(gxe, kind)(description=description, severity=severity, **kwargs)


def _context(docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites["local"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(Path(docs_dir).resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(),
                               analytics_enabled=False, data_docs_sites=sites,
                               progress_bars=ProgressBarsConfig(globally=False))
    return gx.get_context(project_config=config, mode="ephemeral")


def _jsonable(value: Any) -> Any:
    """numpy scalars, pandas NA and tuples -> plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _exception_message(info: Any) -> str | None:
    """The message of a raised exception; GE nests it per metric when a metric fails."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    nested = [_exception_message(v) for v in info.values() if isinstance(v, dict)]
    return next((m for m in nested if m), None)


def _outcome(suite: Suite, result: Any) -> Outcome:
    config = result.expectation_config
    kwargs = config.kwargs
    res = result.result or {}
    examples = res.get("partial_unexpected_index_list") or res.get("partial_unexpected_list") or []
    error = _exception_message(result.exception_info)
    column = kwargs.get("column") or kwargs.get("column_A") or kwargs.get("column_list")
    return Outcome(
        suite=suite.name,
        expectation=config.type,
        description=config.description or config.type,
        severity=getattr(config.severity, "value", str(config.severity)),
        success=bool(result.success),
        column=", ".join(column) if isinstance(column, list) else column,
        unexpected_count=_jsonable(res.get("unexpected_count")),
        element_count=_jsonable(res.get("element_count")),
        observed=_jsonable(res.get("observed_value")),
        examples=_jsonable(examples),
        error=error,
    )


def run_suites(suites: list[Suite], docs_dir: Path | None = None, n_examples: int = 5,
               suites_dir: Path | None = None) -> list[Outcome]:
    """Validate every suite; build Data Docs into ``docs_dir`` and save suites as JSON if given.

    A GE Checkpoint hands one ``dataframe`` to all its validation definitions, and each suite
    here has its own table, so each definition runs on its own; the Data Docs are built once at
    the end from the stored results.
    """
    import json

    import great_expectations as gx

    context = _context(docs_dir)
    source = context.data_sources.add_pandas("track2")
    outcomes: list[Outcome] = []
    for suite in suites:
        batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all")
        gx_suite = context.suites.add(gx.ExpectationSuite(name=suite.name, notes=suite.notes or None))
        for e in suite.expectations:
            gx_suite.add_expectation(e)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite))
        ids = [c for c in suite.id_columns if c in suite.data.columns]
        result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": n_examples}
        if ids:
            result_format["unexpected_index_column_names"] = ids
        result = definition.run(batch_parameters={"dataframe": suite.data}, result_format=result_format)
        order = {e.id: i for i, e in enumerate(gx_suite.expectations)}
        results = sorted(result.results, key=lambda r: order.get(r.expectation_config.id, len(order)))
        suite_outcomes = [_outcome(suite, r) for r in results]
        outcomes += suite_outcomes
        n_failed = sum(not o.success for o in suite_outcomes)
        log.info("suite %-14s %4d rows  %2d expectations  %d failed", suite.name, len(suite.data),
                 len(suite_outcomes), n_failed)
        if suites_dir is not None:
            Path(suites_dir).mkdir(parents=True, exist_ok=True)
            (Path(suites_dir) / f"{suite.name}.json").write_text(
                json.dumps(gx_suite.to_json_dict(), indent=2, default=str) + "\n")
    if docs_dir is not None:
        context.build_data_docs()
    return outcomes
