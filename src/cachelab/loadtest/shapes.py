"""Load shapes: how many users run at each moment of a test.

Locust uses any ``LoadTestShape`` it finds in the locustfile, and then
ignores ``-u``/``-r``/``-t``. So the locustfile declares exactly one shape,
a :class:`~cachelab.loadtest.locust_shapes.SelectableShape`, which reads
``--shape`` (``$CACHELAB_SHAPE``) and the usual ``-u`` (peak users), ``-r``
(spawn rate) and ``-t`` (duration); with the default ``--shape none`` the
plugin removes it at start-up and Locust runs as if no shape existed (plain
``-u/-r/-t``, web UI editing). The schedules are plain functions of time,
here, importable and tested without Locust (whose import monkey-patches the
standard library).

The shapes (``U`` = ``-u``, ``D`` = ``-t``, 60 s when not given; soak runs
until stopped without ``-t``):

* ``ramp``     — 1 → U linearly over 90 % of D, then hold: where does latency bend?
* ``step``     — U·k/N for N equal steps (``--shape-steps``): a plateau per level.
* ``spike``    — U/5 for 40 % of D, U for 20 %, U/5 again: does the cache absorb a
  burst, and how fast do latencies recover?
* ``soak``     — ramp to U over min(10 % of D, 60 s), then hold: leaks, evictions,
  TTL churn over time.
* ``constant`` — open model: U users (the concurrency cap) pace their tasks so the
  whole test issues ``--arrival-rate`` tasks per second, whatever the
  latency. Each request is also timed from its *intended* start (see
  :mod:`cachelab.loadtest.pacing`), which corrects coordinated omission.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHAPES = ("none", "ramp", "step", "spike", "soak", "constant")
_ALIASES = {"": "none", "default": "none", "off": "none", "car": "constant", "arrival": "constant",
            "constant-arrival-rate": "constant", "open": "constant"}
DEFAULT_DURATION = 60.0


def normalize_shape(name: str | None) -> str:
    key = (name or "none").strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose one of {', '.join(SHAPES)}")
    return key


@dataclass(frozen=True)
class ShapeParams:
    users: int = 10
    spawn_rate: float = 1.0
    duration: float | None = None  # seconds; None = until stopped (where the shape allows)
    steps: int = 4


def shape_target(shape: str, t: float, p: ShapeParams) -> tuple[int, float] | None:
    """``(users, spawn_rate)`` at ``t`` seconds into the test, or None when the test is over."""
    shape = normalize_shape(shape)
    users = max(1, p.users)
    fast = max(p.spawn_rate, float(users))  # reach each new target within one tick
    if shape in ("none", "constant", "soak"):
        if p.duration is not None and t >= p.duration:
            return None
        if shape == "none":
            return users, p.spawn_rate
        if shape == "constant":
            return users, fast
        ramp = min(0.1 * (p.duration or 600.0), 60.0)
        return max(1, math.ceil(users * min(1.0, t / ramp))), fast
    duration = p.duration or DEFAULT_DURATION
    if t >= duration:
        return None
    if shape == "ramp":
        frac = min(1.0, t / (0.9 * duration))
        return max(1, math.ceil(users * frac)), fast
    if shape == "step":
        steps = max(1, p.steps)
        k = min(steps, int(t // (duration / steps)) + 1)
        return max(1, math.ceil(users * k / steps)), fast
    # spike
    base = max(1, users // 5)
    return (users if 0.4 * duration <= t < 0.6 * duration else base), fast
