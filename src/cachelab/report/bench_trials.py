"""The benchmark step: ``pytest --benchmark-only`` as repeated trials, and metrics from them.

One pytest-benchmark pass gives each benchmark a few rounds within a few
milliseconds: a figure of that moment, not of the run. So the report runs the
whole ``bench/`` folder several times (trials), alternating sides when a base
is measured too (A B, B A, A B, …), and keeps every trial:

* each benchmark's time is divided by a floor **of the same trial**, so what
  the machine was doing then cancels, and the per-trial ratios are the samples
  a verdict is made from (``bench.<name>.ratio_to_ping``). The floor matches
  what the row waits on: PING on the same client kind (``extra_info["floor"]``:
  a blocking socket and an event loop wake differently; on an idle machine the
  sync PING was 1.4× the async one, beside a busy core 0.55×), and for a row
  of CPU work, under 0.1 round trips per op (key building, leased and local
  limits, in-process requests, a 100-key pipeline per GET), a fixed slice of
  interpreter work, which a deep-idling CPU does not slow as it slows a round
  trip;
* the cost pass of every trial gives the exact metrics: round trips,
  commands, script-inner commands, bytes in and out, memory per key. If a
  figure that should be exact differs between trials, it is kept as timed
  and says so (see :func:`cachelab.report.metrics.from_trials`); a benchmark
  whose cost depends on timing or server state says so itself
  (``extra_info["cost_varies"]``: the stampede experiments, SCAN pages), and
  its cost figures are always timed; one whose reply size alone depends on the
  clock or on server counters says ``extra_info["bytes_vary"]`` (the
  clock-aligned rate-limit windows, INFO), and only its bytes are timed;
* server µs per operation (counted once) is timed, from every trial.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cachelab.report.metrics import Metric, from_trials, info, timed
from cachelab.report.sides import Side

FLOOR = "test_async_floor[ping]"
#: The floor each kind of row is divided by (rows that do not say are async).
FLOORS = {"async": FLOOR, "sync": "test_sync_floor[ping]", "cpu": "test_cpu_floor"}
#: Fewer round trips per op than this and a row is CPU work (leases refill now and then).
CPU_ONLY_ROUND_TRIPS = 0.1
#: The unit of ``ratio_to_ping`` by floor kind (the metric keeps its name across kinds).
FLOOR_UNITS = {"async": "× PING", "sync": "× sync PING", "cpu": "× CPU floor"}

#: extra_info field → (metric suffix, unit); exact for a fixed workload.
EXACT_FIELDS = {
    "round_trips_per_op": ("round_trips", "RT/op"),
    "commands_per_op": ("commands", "commands/op"),
    "inner_commands_per_op": ("script_commands", "commands/op"),
    "bytes_in_per_op": ("bytes_in", "B/op"),
    "bytes_out_per_op": ("bytes_out", "B/op"),
    "memory_per_key": ("memory_per_key", "B"),
}

BYTE_FIELDS = ("bytes_in_per_op", "bytes_out_per_op")
TrialRows = dict[str, dict[str, Any]]


class BenchFailed(RuntimeError):
    """A benchmark pass produced no results."""


def parse_trial(path: Path) -> TrialRows:
    """One pass's JSON as ``{benchmark name: row}`` with the figures the report uses."""
    data = json.loads(path.read_text())
    rows: TrialRows = {}
    for b in data["benchmarks"]:
        extra = b.get("extra_info", {})
        rows[b["name"]] = {
            "group": b.get("group"),
            "floor": extra.get("floor", "async"),
            "median_us": b["stats"]["median"] * 1e6,
            "server_usec_per_op": extra.get("server_usec_per_op"),
            "server_usec_booked_per_op": extra.get("server_usec_booked_per_op"),
            "cost_varies": extra.get("cost_varies"),
            "bytes_vary": extra.get("bytes_vary"),
            **{field: extra.get(field) for field in EXACT_FIELDS},
        }
        for field in BYTE_FIELDS:
            # The meter subtracts its own INFO traffic as calibrated just before the cost pass, but
            # INFO's replies grow by a byte when a counter gains a digit: a few bytes per pass, a
            # fraction of a byte per op. Whole bytes per op are exact; those fractions are not.
            if rows[b["name"]][field] is not None:
                rows[b["name"]][field] = round(rows[b["name"]][field])
    return rows


def run_trials(
    folder: Path,
    sides: Sequence[Side],
    *,
    trials: int,
    bench_args: Sequence[str],
    select: str | None = None,
    env: dict[str, str] | None = None,
    progress: Callable[[str], None] = print,
    timeout: float = 1800,
) -> dict[str, list[TrialRows]]:
    """``trials`` passes per side, alternating the order of sides each round; rows per side per trial."""
    out_dir = folder / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[TrialRows]] = {side.label: [] for side in sides}
    for k in range(trials):
        order = list(sides) if k % 2 == 0 else list(reversed(sides))
        for side in order:
            started = time.monotonic()
            out = out_dir / f"{side.label}-trial{k + 1}.json"
            cmd = [
                side.python,
                "-m",
                "pytest",
                "bench",
                "--benchmark-only",
                f"--benchmark-json={out}",
                "-q",
                "-p",
                "no:cacheprovider",
                *bench_args,
            ]
            if select:
                cmd += ["-k", select]
            log = out_dir / f"{side.label}-trial{k + 1}.log"
            with log.open("wb") as fh:
                code = subprocess.run(
                    cmd,
                    cwd=side.root,
                    env=side.environ(env),
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                ).returncode
            if not out.is_file():
                raise BenchFailed(f"{side.label} benchmarks produced no JSON (pytest exit {code}); see {log}")
            results[side.label].append(parse_trial(out))
            progress(
                f"  benchmarks: {side.label} trial {k + 1}/{trials} in {time.monotonic() - started:.0f} s"
                + (f" (pytest exit {code})" if code else "")
            )
    return results


def floor_of(rows: TrialRows, kind: str = "async") -> float | None:
    """The trial's floor for ``kind`` rows (None when that floor was not run)."""
    row = rows.get(FLOORS.get(kind, FLOOR))
    return row["median_us"] if row else None


def floor_kind(row: dict[str, Any]) -> str:
    """Which floor a row is divided by: the CPU floor for a row with no round trips, else the PING
    of its own client kind."""
    round_trips = row.get("round_trips_per_op")
    if round_trips is not None and round_trips < CPU_ONLY_ROUND_TRIPS:
        return "cpu"
    return row["floor"]


def _ratios(present: Sequence[tuple[dict[str, Any], TrialRows]]) -> list[float]:
    """Each trial's time over the floor of its own trial and kind (an older trial without the CPU
    floor falls back to the PING of the row's client kind)."""
    out = []
    for row, trial in present:
        floor = floor_of(trial, floor_kind(row)) or floor_of(trial, row["floor"])
        if floor:
            out.append(row["median_us"] / floor)
    return out


def bench_metrics(trials: Sequence[TrialRows]) -> dict[str, Metric]:
    """Metrics of one side from its trials (see the module docstring)."""
    metrics: dict[str, Metric] = {}
    names = sorted({name for rows in trials for name in rows})
    for name in names:
        present = [(rows[name], rows) for rows in trials if name in rows]
        key = f"bench.{name}"
        medians = [row["median_us"] for row, _ in present]
        metrics[f"{key}.median_us"] = info(statistics.median(medians), "µs/op")
        if name not in FLOORS.values():
            unit = FLOOR_UNITS.get(floor_kind(present[0][0]), "× PING")
            metrics[f"{key}.ratio_to_ping"] = timed(_ratios(present), unit, "lower")
        elif name != FLOOR:
            # One floor over another moves with how deeply the machine idles (the sync PING was
            # 1.4× the async one quiet, 0.55× beside a busy core): shown, never judged.
            to_async = [row["median_us"] / f for row, t in present if (f := floor_of(t))]
            if to_async:
                metrics[f"{key}.ratio_to_ping"] = info(statistics.median(to_async), "× async PING")
        usec = [row["server_usec_per_op"] for row, _ in present if row["server_usec_per_op"] is not None]
        if usec and any(usec):
            metrics[f"{key}.server_usec"] = timed(usec, "µs/op", "lower")
        varies = next((row["cost_varies"] for row, _ in present if row.get("cost_varies")), None)
        bytes_vary = next((row["bytes_vary"] for row, _ in present if row.get("bytes_vary")), None)
        for field, (suffix, unit) in EXACT_FIELDS.items():
            values = [row[field] for row, _ in present if row.get(field) is not None]
            if values and bytes_vary and field in BYTE_FIELDS and not varies:
                metrics[f"{key}.{suffix}"] = timed(values, unit, "lower", note=f"varies: {bytes_vary}")
                continue
            if values and varies:
                # Declared by the benchmark: even if this run's trials happened to agree, another
                # run's may all agree on another value; never compare such a figure as exact.
                metrics[f"{key}.{suffix}"] = timed(values, unit, "lower", note=f"varies: {varies}")
            elif values:
                metrics[f"{key}.{suffix}"] = from_trials(values, unit)
    return metrics


def summary_rows(trials: Sequence[TrialRows]) -> list[dict[str, Any]]:
    """One row per benchmark across trials (for the CSV and the HTML table)."""
    rows = []
    for name in sorted({n for t in trials for n in t}):
        present = [(t[name], t) for t in trials if name in t]
        first = present[0][0]
        ratios = _ratios(present)

        def med(field: str, present: list = present) -> float | None:
            values = [r[field] for r, _ in present if r.get(field) is not None]
            return statistics.median(values) if values else None

        rows.append(
            {
                "name": name,
                "group": first["group"],
                "trials": len(present),
                "median_us": med("median_us"),
                "ratio_to_ping": statistics.median(ratios) if ratios else None,
                "ratio_min": min(ratios) if ratios else None,
                "ratio_max": max(ratios) if ratios else None,
                "server_usec_per_op": med("server_usec_per_op"),
                "server_usec_booked_per_op": med("server_usec_booked_per_op"),
                **{field: med(field) for field in EXACT_FIELDS},
            }
        )
    return rows
