"""The benchmark harness: per-op times, server cost in every result, cost pass in smoke mode."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from cachelab.client import ResilientRedis
from cachelab.harness.bench import COST_FIELDS, AsyncBench, BenchTarget, SyncBench, measure_cost_async
from cachelab.harness.cost import CostMeter
from cachelab.harness.payloads import dashboard, dashboard_of_size, value_of_size

ROOT = Path(__file__).resolve().parents[1]


class SmokeBenchmark:
    """Stands in for pytest-benchmark's fixture under ``--benchmark-disable``: runs the target once."""

    disabled = True

    def __init__(self) -> None:
        self.group: str | None = None
        self.extra_info: dict[str, Any] = {}
        self.calls = 0

    def pedantic(self, target: Any, *, rounds: int = 1, iterations: int = 1) -> Any:
        self.calls += 1
        return target()


def test_baseline_benchmarks_record_per_op_times_and_server_cost(tmp_path: Path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, "-m", "pytest", "bench/bench_baseline.py", "--benchmark-only",
        f"--benchmark-json={out}", "--benchmark-max-time=0.05", "--benchmark-min-rounds=2",
        "-p", "no:cacheprovider", "-q",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    benchmarks = {b["name"]: b for b in json.loads(out.read_text())["benchmarks"]}
    assert len(benchmarks) >= 10
    for name, bench in benchmarks.items():
        info = bench["extra_info"]
        missing = [f for f in COST_FIELDS if f not in info]
        assert not missing, f"{name} lacks {missing}"
        assert info["time_unit"] == "op"
        assert bench["stats"]["iterations"] == info["ops_per_round"]  # stats were divided per op
        assert bench["group"] in ("baseline", "value-size")
    ping = benchmarks["test_async_floor[ping]"]["extra_info"]
    assert ping["round_trips_per_op"] == 1 and ping["commands"] == {"ping": 1.0}
    assert benchmarks["test_sync_floor[get_miss]"]["extra_info"]["keyspace_misses_per_op"] == 1
    assert benchmarks["test_async_floor[set]"]["extra_info"]["memory_per_key"] > 100
    one_mb = benchmarks["test_async_set_get_value_size[1MB]"]["extra_info"]
    assert one_mb["round_trips_per_op"] == 2 and one_mb["bytes_in_per_op"] > 1_000_000


def test_cost_pass_runs_in_smoke_mode_and_counts_a_pipeline_as_one_round_trip(redis_url: str):
    loop = asyncio.new_event_loop()
    rredis = ResilientRedis.from_url(redis_url)
    meter = CostMeter(redis_url, rredis.round_trips)
    try:
        client = rredis.client

        async def pipeline_of_10() -> None:
            pipe = client.pipeline(transaction=False)
            for _ in range(10):
                pipe.get("bench-harness:never-set")  # a miss whatever earlier tests left on this server
            await pipe.execute()

        smoke = SmokeBenchmark()
        bench = AsyncBench(loop, meter=meter, target=BenchTarget.probe(redis_url))
        info = bench(smoke, pipeline_of_10, ops=7, batch=10, group="g")
        assert smoke.calls == 1 and smoke.group == "g"
        assert info["round_trips_per_op"] == pytest.approx(0.1)
        assert info["commands"] == {"get": 1.0}
        assert info["keyspace_misses_per_op"] == 1.0
        assert info["ops_per_round"] == 70 and info["cost_ops"] == 70
        assert info["redis_version"].count(".") == 2

        cost = measure_cost_async(loop, lambda: asyncio.sleep(0), calls=50, meter=meter)
        assert cost.round_trips == 0 and cost.total_commands == 0
        # The meter's own INFO traffic is not counted; what is left is INFO's reply changing length
        # as its counters gain or lose a digit between the calibration and the last snapshot.
        assert abs(cost.bytes_in) < 64 and abs(cost.bytes_out) < 64
    finally:
        meter.close()
        loop.run_until_complete(rredis.aclose())
        loop.close()


def test_sync_bench_without_meter_records_no_server_cost():
    smoke = SmokeBenchmark()
    calls = []
    info = SyncBench()(smoke, lambda: calls.append(1), ops=5, extra={"encoded_bytes": 3})
    assert len(calls) == 5 and "round_trips_per_op" not in info and info["encoded_bytes"] == 3


def test_dashboard_payloads_are_deterministic_and_sized():
    assert dashboard(5) == dashboard(5)
    assert dashboard(5, seed=1) != dashboard(5)
    small = len(orjson.dumps(dashboard_of_size(2_000)))
    assert 2_000 <= small < 2_600
    row = dashboard(3)["initiatives"][0]
    assert set(row) == {"id", "title", "progress", "status", "owner", "area", "updated_at"}
    assert len(value_of_size(1_000_000)) == 1_000_000
