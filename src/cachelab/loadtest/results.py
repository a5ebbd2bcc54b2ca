"""Writing a run's results: JSON for tools, CSV for spreadsheets, histograms for exact re-merging.

Files go beside Locust's own ``--csv``/``--html`` output, under fixed names
so ``cachelab report`` and ``cachelab compare`` can find them:

* ``loadtest.json``   — everything: parameters, per-endpoint counts, X-Cache
  outcomes, hit ratios, 429s, µs-resolution percentiles (raw and corrected),
  generator CPU, Redis deltas, threshold verdicts;
* ``endpoints.csv``   — one row per endpoint plus ``Aggregated``;
* ``histograms.json`` — the encoded HdrHistograms, so runs (or workers) can be
  merged later without losing precision.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson

SUMMARY_FILE = "loadtest.json"
ENDPOINTS_FILE = "endpoints.csv"
HISTOGRAMS_FILE = "histograms.json"
_LATENCY_KEYS = ("p50", "p90", "p95", "p99", "p99.9", "max", "mean")


def not_modified(endpoint: dict[str, Any]) -> int:
    """An endpoint summary's 304s: revalidations answered without a body (successes, not failures)."""
    return int(endpoint.get("statuses", {}).get("304", 0))


def endpoint_rows(endpoints: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, e in endpoints.items():
        row: dict[str, Any] = {
            "endpoint": name,
            "requests": e["requests"],
            "failures": e["failures"],
            "error_rate": e["error_rate"],
            "rps": e["rps"],
            "rate_limited": e["rate_limited"],
            "rate_limited_expected": e["rate_limited_expected"],
            "not_modified": not_modified(e),
            **{k.lower(): v for k, v in e["x_cache"].items()},
            "hit_ratio": "" if e["hit_ratio"] is None else e["hit_ratio"],
        }
        for prefix, lat in (("", e["latency_ms"]), ("corrected_", e["corrected_latency_ms"])):
            for k in _LATENCY_KEYS:
                row[f"{prefix}{k}_ms"] = "" if lat is None else lat[k]
        rows.append(row)
    return rows


def write_results(
    directory: str | Path, summary: dict[str, Any], histograms: dict[str, Any]
) -> dict[str, Path]:
    """Write the three files into ``directory`` (created if needed); returns their paths by name."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary": out / SUMMARY_FILE,
        "endpoints": out / ENDPOINTS_FILE,
        "histograms": out / HISTOGRAMS_FILE,
    }
    paths["summary"].write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    paths["histograms"].write_bytes(orjson.dumps(histograms, option=orjson.OPT_INDENT_2))
    rows = endpoint_rows(summary["endpoints"])
    with paths["endpoints"].open("w", newline="", encoding="utf-8") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return paths


def read_summary(directory: str | Path) -> dict[str, Any]:
    return orjson.loads((Path(directory) / SUMMARY_FILE).read_bytes())
