"""The campaign's table: episodes, faults by kind, violations by invariant, recovery times.

Pure: :func:`render` turns the episodes' results into the text ``make chaos`` prints.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from chaos.invariants import FaultRecord, Invariant, Observed, Sample, Violation
from chaos.plan import Config, EpisodePlan, Kind, not_applicable


@dataclass(frozen=True, kw_only=True, slots=True)
class EpisodeResult:
    plan: EpisodePlan
    observed: Observed | None
    violations: Sequence[Violation] = ()
    error: str | None = None
    """Why the harness could not run or observe the episode (not a finding about the code)."""
    seconds: float = 0.0
    kept: str | None = None
    """The episode's project folder, kept when it found something."""
    baseline: bool = False
    """The uninterrupted reference run of the configuration (checked like an episode)."""


@dataclass(slots=True)
class KindStats:
    planned: int = 0
    injected: int = 0
    recoveries: list[float] = field(default_factory=list[float])
    notes: Counter[str] = field(default_factory=Counter[str])


def recovery_s(at: float, samples: Sequence[Sample], until: float | None) -> float | None:
    """Seconds from a fault at ``at`` until rank 0 trained again: the first progress line of a
    newer attempt before ``until`` (the next fault, or the end), else the first new progress
    line of the same attempt; None when neither came."""
    before = [s for s in samples if s.t <= at]
    attempt, progress = (before[-1].attempt, before[-1].progress) if before else (0, 0)
    window = [s for s in samples if s.t > at and (until is None or s.t <= until)]
    newer = next((s for s in window if s.attempt > attempt and s.progress > 0), None)
    if newer is not None:
        return newer.t - at
    same = next((s for s in window if s.attempt == attempt and s.progress > progress), None)
    return same.t - at if same is not None else None


def fault_recoveries(observed: Observed) -> list[tuple[FaultRecord, float | None]]:
    """Each injected fault with its recovery time, counted until the next fault."""
    injected = [r for r in observed.faults if r.at is not None]
    out: list[tuple[FaultRecord, float | None]] = []
    for i, record in enumerate(injected):
        at = record.at
        assert at is not None
        until = injected[i + 1].at if i + 1 < len(injected) else None
        measured = record.fault.kind is not Kind.RELAUNCH_FINISHED
        out.append((record, recovery_s(at, observed.samples, until) if measured else None))
    return out


def kind_stats(results: Sequence[EpisodeResult]) -> dict[Kind, KindStats]:
    stats = {kind: KindStats() for kind in Kind}
    for result in results:
        stats_planned = Counter(f.kind for f in result.plan.faults)
        for kind, n in stats_planned.items():
            stats[kind].planned += n
        if result.observed is None:
            continue
        for record in result.observed.faults:
            if record.at is None:
                stats[record.fault.kind].notes[record.note or "not injected"] += 1
        for record, seconds in fault_recoveries(result.observed):
            stats[record.fault.kind].injected += 1
            if seconds is not None:
                stats[record.fault.kind].recoveries.append(seconds)
    return stats


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0..1) of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def _seconds(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {percentile(values, 0.9):.1f} / {max(values):.1f}"


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def render(results: Sequence[EpisodeResult], config: Config, seed: int, elapsed_s: float) -> str:
    episodes = [r for r in results if not r.baseline]
    baselines = [r for r in results if r.baseline]
    with_violations = [r for r in results if r.violations]
    lines = [
        f"chaos: {len(episodes)} episode(s) on {config.label}, seed {seed}, "
        f"{elapsed_s / 60:.1f} min; {len(with_violations)} with violations, "
        f"{sum(r.error is not None for r in results)} harness error(s)"
        + (f"; baseline run checked too ({baselines[0].seconds:.0f} s)" if baselines else ""),
        "",
        "faults by kind (recovery: seconds until rank 0 trains again, median / p90 / max)",
    ]
    stats = kind_stats(episodes)
    rows = [["kind", "planned", "injected", "recovered", "recovery s"]]
    absent: list[str] = []
    for kind, s in stats.items():
        reason = not_applicable(kind, config)
        if reason is not None:
            absent.append(f"  {kind.value}: not run here ({reason})")
            continue
        rows.append([kind.value, str(s.planned), str(s.injected), str(len(s.recoveries)),
                     _seconds(s.recoveries)])  # fmt: skip
    lines += _table(rows)
    notes = [
        f"  {kind.value}: {n} x not injected: {note}"
        for kind, s in stats.items()
        for note, n in sorted(s.notes.items())
    ]
    lines += notes + absent
    batches = [b for r in episodes if r.observed for b in r.observed.relaunches]
    if batches:
        accepted = Counter(len(b.accepted) for b in batches)
        shown = ", ".join(f"{n} accepted: {c}" for n, c in sorted(accepted.items()))
        total = sum(b.count for b in batches)
        lines += ["", f"relaunch batches: {len(batches)} ({total} slurm-launch --run-id); {shown}"]
    lines += ["", "violations by invariant"]
    by_invariant: dict[Invariant, list[EpisodeResult]] = defaultdict(list)
    counts: Counter[Invariant] = Counter()
    for result in results:
        for violation in result.violations:
            counts[violation.invariant] += 1
            if result not in by_invariant[violation.invariant]:
                by_invariant[violation.invariant].append(result)
    rows = [["invariant", "violations", "episodes"]]
    rows += [[inv.value, str(counts[inv]), str(len(by_invariant[inv]))] for inv in Invariant]
    lines += _table(rows)
    if with_violations:
        lines += ["", "violations"]
        for result in with_violations:
            lines.append(f"  {_name(result)}: faults {_faults(result)}"
                         + (f"; kept {result.kept}" if result.kept else ""))  # fmt: skip
            lines += [f"    [{v.invariant.value}] {v.detail}" for v in result.violations]
    errors = [r for r in results if r.error is not None]
    if errors:
        lines += ["", "harness errors (episodes not observed to the end)"]
        lines += [f"  {_name(r)}: {r.error}" for r in errors]
    return "\n".join(lines) + "\n"


def _name(result: EpisodeResult) -> str:
    return "baseline" if result.baseline else result.plan.name


def _faults(result: EpisodeResult) -> str:
    """The plan's faults, each with when it was injected (the driver records them in order)."""
    if not result.plan.faults:
        return "none"
    records = list(result.observed.faults) if result.observed is not None else []
    parts: list[str] = []
    for i, fault in enumerate(result.plan.faults):
        record = records[i] if i < len(records) else None
        when = ""
        if record is not None and record.at is not None and result.observed is not None:
            when = f" @t+{record.at - result.observed.t0:.1f}s"
        elif record is not None:
            when = f" (not injected: {record.note})"
        parts.append(fault.describe() + when)
    return "; ".join(parts)
