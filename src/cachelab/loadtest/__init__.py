"""Load testing the sample dashboard with Locust: the logic behind ``locustfiles/``.

Importable without Locust (whose import monkey-patches the standard library):

* :class:`ZipfSampler` — seeded Zipf popularity for tenants, pages and rows;
* :class:`LatencyHistogram` — µs HdrHistogram that encodes, decodes and merges;
* :class:`LoadMetrics` — per-endpoint counts, X-Cache outcomes, hit ratio, 429s, raw and
  coordinated-omission-corrected latency; drains to and merges from worker reports;
* :class:`CpuMeter` / :func:`generator_summary` — the generator's CPU and the saturated flag;
* :class:`RedisRunMeter` — Redis server deltas over a run, from INFO only;
* :func:`parse_threshold`, :func:`load_thresholds`, :func:`evaluate` — k6-style pass/fail;
* :func:`shape_target` — the ramp/step/spike/soak/constant schedules; :class:`Pacer` — open-model pacing;
* :func:`run_scenario` → :class:`ScenarioResult` — app up, Locust headless, numbers back.

Locust-side modules, imported only by locustfiles: :mod:`cachelab.loadtest.users`
(the user behaviours), :mod:`cachelab.loadtest.locust_shapes` (``SelectableShape``) and
:mod:`cachelab.loadtest.plugin` (``install(events)``).

Layer 4, beside :mod:`cachelab.harness` (see ``cachelab._layers``).
"""

from cachelab.loadtest.cpu import CpuMeter, generator_summary
from cachelab.loadtest.histograms import LatencyHistogram
from cachelab.loadtest.metrics import EndpointMetrics, LoadMetrics, hit_ratio
from cachelab.loadtest.options import parse_mix, parse_think_time
from cachelab.loadtest.pacing import Pacer
from cachelab.loadtest.redis_stats import RedisRunMeter
from cachelab.loadtest.results import read_summary, write_results
from cachelab.loadtest.runner import EndpointResult, ScenarioFailed, ScenarioResult, run_scenario
from cachelab.loadtest.shapes import SHAPES, ShapeParams, normalize_shape, shape_target
from cachelab.loadtest.thresholds import (
    Threshold,
    ThresholdError,
    ThresholdResult,
    evaluate,
    load_thresholds,
    parse_threshold,
)
from cachelab.loadtest.zipf import ZipfSampler

__all__ = [
    "SHAPES",
    "CpuMeter",
    "EndpointMetrics",
    "EndpointResult",
    "LatencyHistogram",
    "LoadMetrics",
    "Pacer",
    "RedisRunMeter",
    "ScenarioFailed",
    "ScenarioResult",
    "ShapeParams",
    "Threshold",
    "ThresholdError",
    "ThresholdResult",
    "ZipfSampler",
    "evaluate",
    "generator_summary",
    "hit_ratio",
    "load_thresholds",
    "normalize_shape",
    "parse_mix",
    "parse_think_time",
    "parse_threshold",
    "read_summary",
    "run_scenario",
    "shape_target",
    "write_results",
]
