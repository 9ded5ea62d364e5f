"""A sweep's parent run, as data: the swept keys and values, how the best run is chosen, and
the summary table written once every run of the sweep has ended.

The swept keys are those the sweep's elements set themselves, and any other argument whose
value differs between the runs (for several ``--args`` files). The best run is the FINISHED one
with the best final value of the monitored metric: ``slurm-launch --best``, else the sweep
file's ``best``, else the entry function's own ``monitor``/``mode`` arguments (as
:class:`~blocktrain.train.config.TrainConfig` has them) when every run monitors the same
metric; without any of them there is no best run.

Pure functions; :mod:`.parentrun` reads the runs and writes the results.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from blocktrain.core.values import JSON, flatten
from blocktrain.launch.sweeps.expand import ArgumentSet, Best
from blocktrain.track import param_strings

SYSTEM_PREFIX = "system/"
"""System metrics (CPU, memory, GPU samples) say nothing about a run's result: not summarised."""
ENDED = frozenset({"FINISHED", "FAILED", "KILLED"})
_BASE_COLUMNS = ("run_id", "name", "status")


def swept_keys(
    declared: Sequence[Mapping[str, JSON]], resolved: Sequence[Mapping[str, JSON]]
) -> list[str]:
    """The keys the elements set themselves (in order), then the other flattened arguments
    whose values differ between runs (sorted)."""
    own = list(dict.fromkeys(key for values in declared for key in values))
    flat = [flatten(dict(args)) for args in resolved]
    keys = sorted({key for args in flat for key in args} - set(own))
    differing = [k for k in keys if len({json.dumps(a.get(k), sort_keys=True) for a in flat}) > 1]
    return own + differing


def child_values(keys: Sequence[str], resolved: Mapping[str, JSON]) -> dict[str, str]:
    """One run's values of the swept keys, as its params show them."""
    flat = flatten(dict(resolved))
    return param_strings({key: flat.get(key) for key in keys})


def parent_params(keys: Sequence[str], values: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """``sweep.lr`` = ``0.01,0.1``: each swept key's distinct values, in the runs' order."""
    return param_strings(
        {f"sweep.{key}": ",".join(dict.fromkeys(v[key] for v in values)) for key in keys}
    )


def entry_monitor(resolved: Sequence[Mapping[str, JSON]]) -> Best | None:
    """The ``monitor`` argument (at any depth, with its sibling ``mode``) shared by every run."""
    found = {_monitor(flatten(dict(args))) for args in resolved}
    return found.pop() if len(found) == 1 else None


def _monitor(flat: Mapping[str, JSON]) -> Best | None:
    for key, value in flat.items():
        if (key == "monitor" or key.endswith(".monitor")) and isinstance(value, str) and value:
            mode = flat.get(key.removesuffix("monitor") + "mode", "min")
            return Best(value, "max" if mode == "max" else "min")
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class ChildResult:
    """What the summary shows of one run of the sweep."""

    run_id: str
    name: str
    status: str
    values: dict[str, str]
    """The run's values of the swept keys."""
    metrics: dict[str, float] = field(default_factory=dict[str, float])
    """The final value of each metric the run logged."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Summary:
    swept: list[str]
    rows: list[ChildResult]
    best_by: Best | None
    best: ChildResult | None


def summarize(
    children: Sequence[ChildResult], swept: Sequence[str], best_by: Best | None
) -> Summary:
    """The table of the sweep's runs (system metrics left out) and its best run."""
    rows = [
        ChildResult(
            run_id=c.run_id,
            name=c.name,
            status=c.status,
            values=dict(c.values),
            metrics={k: v for k, v in c.metrics.items() if not k.startswith(SYSTEM_PREFIX)},
        )
        for c in children
    ]
    return Summary(swept=list(swept), rows=rows, best_by=best_by, best=best_run(rows, best_by))


def best_run(children: Sequence[ChildResult], best_by: Best | None) -> ChildResult | None:
    """The FINISHED run with the best finite value of the metric; the first one on a tie."""
    if best_by is None:
        return None
    scored = [
        (c.metrics[best_by.metric], c)
        for c in children
        if c.status == "FINISHED" and math.isfinite(c.metrics.get(best_by.metric, math.nan))
    ]
    if not scored:
        return None
    pick = min if best_by.mode == "min" else max
    return pick(scored, key=lambda scored_child: scored_child[0])[1]


def parent_status(statuses: Sequence[str]) -> str | None:
    """FAILED when a run failed, FINISHED when every run ended otherwise; None while any runs."""
    if not all(status in ENDED for status in statuses):
        return None
    return "FAILED" if "FAILED" in statuses else "FINISHED"


def columns(summary: Summary) -> list[str]:
    """run_id, name, status, the swept keys, then every metric (``metric.`` before a metric
    named like an earlier column)."""
    taken = [*_BASE_COLUMNS, *summary.swept]
    names = sorted({name for row in summary.rows for name in row.metrics})
    return taken + [f"metric.{n}" if n in taken else n for n in names]


def csv_text(summary: Summary) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns(summary))
    metric_names = sorted({name for row in summary.rows for name in row.metrics})
    for row in summary.rows:
        metrics = [_number(row.metrics.get(name)) for name in metric_names]
        writer.writerow([row.run_id, row.name, row.status,
                         *(row.values.get(k, "") for k in summary.swept), *metrics])  # fmt: skip
    return out.getvalue()


def json_text(summary: Summary, parent_run_id: str) -> str:
    best = summary.best
    by = summary.best_by
    document: dict[str, JSON] = {
        "parent_run_id": parent_run_id,
        "swept": list(summary.swept),
        "best_by": {"metric": by.metric, "mode": by.mode} if by is not None else None,
        "best": (
            {"run_id": best.run_id, "name": best.name, "value": best.metrics[by.metric]}
            if best is not None and by is not None
            else None
        ),
        "rows": [
            {
                "run_id": row.run_id,
                "name": row.name,
                "status": row.status,
                "values": dict(row.values),
                "metrics": dict(row.metrics),
            }
            for row in summary.rows
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def best_tags(summary: Summary) -> dict[str, str]:
    """The parent's tags naming its best run (none without one)."""
    if summary.best is None:
        return {}
    return {
        "blocktrain.best_run_id": summary.best.run_id,
        "blocktrain.best_run_name": summary.best.name,
    }


def _number(value: float | None) -> str:
    return "" if value is None else repr(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class SweepPlan:
    """The parent run of a launch of several runs, before it exists."""

    name: str
    swept: list[str]
    values: list[dict[str, str]]
    """Each run's values of the swept keys, in the order of the runs."""
    best_by: Best | None

    @property
    def params(self) -> dict[str, str]:
        return parent_params(self.swept, self.values)


def plan_sweep(
    name: str,
    sets: Sequence[ArgumentSet],
    resolved: Sequence[Mapping[str, JSON]],
    best: Best | None = None,
) -> SweepPlan:
    """The parent of these runs: its swept keys, each run's values, and how to pick the best
    (``best``, else the sweep file's, else the entry's own monitor)."""
    swept = swept_keys([s.swept for s in sets], resolved)
    best_by = best or next((s.best for s in sets if s.best is not None), None)
    return SweepPlan(
        name=name,
        swept=swept,
        values=[child_values(swept, args) for args in resolved],
        best_by=best_by or entry_monitor(resolved),
    )
