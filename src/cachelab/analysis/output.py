"""One way for every notebook to size its experiments and write its artefacts.

``cachelab report`` runs the notebooks with papermill and then reads what
they left in ``out_dir``; it can only do that if every notebook names and
shapes its files the same way:

* ``<nn>_<name>.png`` — figures, rendered by Agg at 110 dpi;
* ``<nn>_<name>.csv`` — the raw data behind them;
* ``<nn>_summary.json`` — ``{"title", "headlines": {label: number}, "figures",
  "tables", ...}``; the report shows the headlines and keeps them in
  ``metrics.json`` as single measurements (``cachelab compare`` lists them
  but judges only what has trials), so they must be plain numbers.

JSON has no NaN: a missing measurement is written as ``null``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

PROFILES: tuple[str, ...] = ("quick", "full")
T = TypeVar("T")


def for_profile(sizes: Mapping[str, T], profile: str) -> T:
    """The experiment sizes of ``profile`` (``quick`` or ``full``); a clear error for anything else."""
    if profile not in sizes:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(sizes)}")
    return sizes[profile]


def _out(out_dir: str | Path) -> Path:
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_name(name: str) -> None:
    # "<nn>_<name>": the report sorts and groups artefacts by the notebook number.
    prefix = name.split("_", 1)[0]
    if not (len(prefix) == 2 and prefix.isdigit() and "_" in name):
        raise ValueError(f"artefact name {name!r} must look like '<nn>_<name>' (e.g. '01_hit_ratio')")


def save_figure(fig: Any, out_dir: str | Path, name: str) -> Path:
    """Write ``fig`` (a matplotlib Figure) as ``<out_dir>/<name>.png`` and return the path.

    Figures are built with :class:`matplotlib.figure.Figure`, not pyplot, so
    rendering is Agg whatever backend the kernel chose and no GUI is touched.
    """
    _check_name(name)
    path = _out(out_dir) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def write_table(data: Any, out_dir: str | Path, name: str) -> Path:
    """Write a DataFrame (or a list of dicts) as ``<out_dir>/<name>.csv``."""
    import pandas as pd

    _check_name(name)
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(list(data))
    path = _out(out_dir) / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def jsonable(value: Any) -> Any:
    """``value`` made JSON-safe: NaN → None, numpy scalars → numbers, paths → names, dataclasses → dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return value.name
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: Any, out_dir: str | Path, filename: str) -> Path:
    path = _out(out_dir) / filename
    path.write_bytes(orjson.dumps(jsonable(data), option=orjson.OPT_INDENT_2))
    return path


def write_summary(
    out_dir: str | Path,
    number: str,
    title: str,
    headlines: Mapping[str, Any],
    *,
    figures: Iterable[str | Path] = (),
    tables: Iterable[str | Path] = (),
    **extra: Any,
) -> Path:
    """Write ``<nn>_summary.json``: the headline numbers ``cachelab report`` lifts into summary.md.

    ``headlines`` values should be numbers (rounded for reading); ``figures``
    and ``tables`` are the files this notebook wrote (paths or names).
    ``extra`` keys (``profile``, ``capacity`` rows…) are stored alongside.
    """
    if not (len(number) == 2 and number.isdigit()):
        raise ValueError(f"notebook number must be two digits, got {number!r}")
    summary = {
        "title": title,
        "headlines": dict(headlines),
        "figures": [Path(f).name for f in figures],
        "tables": [Path(t).name for t in tables],
        **extra,
    }
    return write_json(summary, out_dir, f"{number}_summary.json")


def rounded(value: float | None, digits: int = 3) -> float | None:
    """``round`` that passes None and NaN through as None (for headlines)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": …, "p90": …, "p99": …}`` of ``values`` (numpy's linear interpolation); NaN if empty."""
    import numpy as np

    if len(values) == 0:
        return {f"p{q:g}": math.nan for q in qs}
    arr = np.asarray(values, dtype=float)
    return {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}
